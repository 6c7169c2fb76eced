//! none: the archive bytes as they are, one member after another.

use std::io::{BufRead, Read, Write};

use super::Initramfs;
use crate::compress::codec::{done, Body, EncodePieces, Encoded, FrameMembers};
use crate::compress::CompressError;

pub(super) const INITRAMFS: Initramfs = Initramfs {
    pieces: |_| Ok(Box::new(Plain)),
    members: |_| Box::new(Plain),
};

pub(super) fn decoder<'a>(r: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    r
}

pub(super) fn member<'a>(r: Box<dyn BufRead + 'a>) -> Box<dyn Read + 'a> {
    Box::new(r)
}

struct Plain;

impl EncodePieces for Plain {
    fn encode(
        &mut self,
        data: &mut Vec<u8>,
        _: bool,
        _: bool,
    ) -> Result<(Body, u32), CompressError> {
        Ok((Body::Done(std::mem::take(data)), 0))
    }
}

impl FrameMembers for Plain {
    fn write(&mut self, e: &Encoded, out: &mut dyn Write) -> Result<(), CompressError> {
        Ok(out.write_all(done(&e.body))?)
    }
}
