//! Little-endian field access on byte slices. Reads are checked: bytes from
//! disk are untrusted, so an out-of-range field is `None`, never a panic.

/// The checksum field that builds for fuzzing take as matching any bytes
/// (other builds give it no meaning). Public for the fuzz crate's seeds.
pub const FUZZ_CRC: u32 = 0x5EED_F022;

/// Whether a checksum read from disk vouches for the bytes it covers.
/// Builds for fuzzing (cargo-fuzz sets `cfg(fuzzing)`) also accept
/// `FUZZ_CRC`: mutated input almost never carries a right CRC-32C, so
/// without this a fuzzer would stop at the page, log-frame and control-file
/// checks and never reach the decoders behind them. Every on-disk checksum
/// of the database is compared here, and every other build compares exactly.
pub(crate) fn crc_matches(stored: u32, computed: u32) -> bool {
    #[cfg(fuzzing)]
    if stored == FUZZ_CRC {
        return true;
    }
    stored == computed
}

pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Writers take offsets the engine computed itself, inside a page it owns;
/// an out-of-range write is a bug in strata, so these index directly.
pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
