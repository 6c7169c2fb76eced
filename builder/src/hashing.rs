//! The one sha256 stream: [`Hashing`] hashes and counts the bytes read or written through it,
//! and can fail once more than a limit have passed. Blob and layer downloads, the layer cache,
//! the written image, pushes and `fledge inspect` all hash through it.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// A reader or writer that hashes and counts what passes through it.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    len: u64,
    /// The limit, and how the error names it ("32 GiB (FLEDGE_...)").
    limit: Option<(u64, String)>,
}

impl<T> Hashing<T> {
    /// No limit; the hash is of the bytes alone.
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            len: 0,
            limit: None,
        }
    }

    /// Fails the read or write that takes the total past `limit` bytes; the error names the
    /// limit as `text`.
    pub fn limited(inner: T, limit: u64, text: String) -> Self {
        Hashing {
            limit: Some((limit, text)),
            ..Self::new(inner)
        }
    }

    /// Bytes passed so far.
    pub fn passed(&self) -> u64 {
        self.len
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The sha256 of the bytes passed so far, and what was wrapped.
    pub fn into_parts(self) -> ([u8; 32], T) {
        (self.hasher.finalize().into(), self.inner)
    }

    /// The sha256 of the bytes passed so far.
    pub fn digest(self) -> [u8; 32] {
        self.into_parts().0
    }

    fn count(&mut self, b: &[u8]) -> io::Result<()> {
        self.hasher.update(b);
        self.len += b.len() as u64;
        match &self.limit {
            Some((limit, text)) if self.len > *limit => {
                Err(io::Error::other(format!("more than {text}")))
            }
            _ => Ok(()),
        }
    }
}

impl Hashing<io::Sink> {
    /// A writer that only hashes.
    pub fn sink() -> Self {
        Self::new(io::sink())
    }
}

impl<R: Read> Hashing<R> {
    /// Reads what is left and returns the sha256 of everything read.
    pub fn finish(mut self) -> io::Result<[u8; 32]> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.digest())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(&buf[..n])?;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// sha256 and length of everything `r` yields.
pub fn sha256_reader(r: impl Read) -> io::Result<([u8; 32], u64)> {
    let mut h = Hashing::new(r);
    io::copy(&mut h, &mut io::sink())?;
    let len = h.passed();
    Ok((h.digest(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_and_writing_hash_the_same_bytes() {
        let data = b"the same bytes, read and written".repeat(1000);
        let want: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(sha256_reader(&data[..]).unwrap(), (want, data.len() as u64));
        let mut w = Hashing::new(Vec::new());
        w.write_all(&data).unwrap();
        assert_eq!(w.passed(), data.len() as u64);
        let (digest, out) = w.into_parts();
        assert_eq!((digest, out), (want, data.clone()));
        let mut r = Hashing::new(&data[..]);
        r.read_exact(&mut [0u8; 10]).unwrap();
        assert_eq!(r.finish().unwrap(), want, "finish reads the rest");
    }

    #[test]
    fn past_the_limit_reads_and_writes_fail_naming_it() {
        let data = [7u8; 100];
        let mut r = Hashing::limited(&data[..], 99, "99 bytes (LIMIT)".into());
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert_eq!(e.to_string(), "more than 99 bytes (LIMIT)");
        let mut r = Hashing::limited(&data[..], 100, "100 bytes".into());
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), 100);
        let mut w = Hashing::limited(io::sink(), 10, "10 bytes".into());
        assert!(w.write_all(&data).is_err());
    }
}
