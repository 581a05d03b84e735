// SPDX-License-Identifier: GPL-2.0
//! `--frame-log PATH`: one line per frame a capture backend produces,
//! written after the frame is in the buffer and before its DQBUF event is
//! sent:
//!
//! ```text
//! SEQUENCE MD5 SESSION
//! ```
//!
//! SEQUENCE is the v4l2_buffer sequence of the DQBUF event (decimal), MD5
//! the lowercase hex MD5 of the bytes the guest reads (for each plane in
//! order, its first `bytesused` bytes), SESSION the virtio-media session id
//! (decimal). Every line is flushed at once.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};

/// Shared handle on the frame log; the default one logs nothing.
#[derive(Clone, Default)]
pub struct FrameLog(Option<Arc<Mutex<File>>>);

impl FrameLog {
    /// Opens (creates, or appends to) the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<FrameLog> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(FrameLog(Some(Arc::new(Mutex::new(f)))))
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Lowercase hex MD5 of the concatenation of `planes`.
    pub fn md5_hex<'a>(planes: impl IntoIterator<Item = &'a [u8]>) -> String {
        let mut h = Md5::new();
        for p in planes {
            h.update(p);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Appends the line of one frame whose planes (already cut to their
    /// bytesused) are `planes`. Write errors are logged, not returned: the
    /// frame still goes to the guest.
    pub fn record<'a>(
        &self,
        sequence: u32,
        session: u32,
        planes: impl IntoIterator<Item = &'a [u8]>,
    ) {
        let Some(f) = &self.0 else { return };
        let line = format!("{sequence} {} {session}\n", Self::md5_hex(planes));
        let mut f = match f.lock() {
            Ok(f) => f,
            Err(p) => p.into_inner(),
        };
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.flush()) {
            log::warn!("frame log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FrameLog;

    #[test]
    fn md5_of_known_strings() {
        assert_eq!(
            FrameLog::md5_hex([&b""[..]]),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        // Planes are hashed as one stream.
        assert_eq!(
            FrameLog::md5_hex([&b"The quick brown fox "[..], b"jumps over the lazy dog"]),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }
}
