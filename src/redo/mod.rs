//! Redo: the page changes a log record carries — how they are encoded,
//! computed from a page's old and new images, and applied in recovery.
//!
//! Every change to pages is physical (a full image, byte ranges, or a move
//! of bytes within the page followed by byte ranges), so the access
//! methods above have no redo code of their own. The log (`wal`) frames
//! and stores records without looking inside them, beyond the kind of its
//! own durable marks.

pub mod diff;
pub mod record;
