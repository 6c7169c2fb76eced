//! Pinned output: the sha256 of the image each compression makes of one fixed entry list. A
//! change that alters output bytes fails here; update the digest deliberately and say so in
//! CHANGELOG.md (images are meant to be byte-identical across fledge versions).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use fledge::archive::{Content, Entry, Kind};
use fledge::compress::{self, Compression, Options};

/// A small image of every kind, with a hardlink pair and bodies over a few KiB.
fn entries() -> Vec<Entry> {
    let e = |path: &str, kind: Kind, perm: u32, ino: u32, nlink: u32| {
        Entry::new(path, kind, perm, ino, nlink, 1_704_067_200)
    };
    let body = |b: Vec<u8>| Kind::File(Content::Bytes(Arc::from(b)));
    let text: Vec<u8> = (0..4000u32)
        .flat_map(|i| format!("line {i} of a pinned file\n").into_bytes())
        .collect();
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    vec![
        e("bin", Kind::Dir, 0o755, 1, 2),
        e("bin/sh", Kind::Symlink("busybox".into()), 0o777, 2, 1),
        e("dev", Kind::Dir, 0o755, 3, 2),
        e(
            "dev/console",
            Kind::CharDev { major: 5, minor: 1 },
            0o600,
            4,
            1,
        ),
        e("etc", Kind::Dir, 0o755, 5, 2),
        e("etc/a", Kind::File(Content::Empty), 0o644, 6, 2),
        e("etc/b", body(b"same\n".to_vec()), 0o644, 6, 2),
        e("init", body(noise), 0o755, 7, 1),
        e("usr", Kind::Dir, 0o755, 8, 2),
        e("usr/text", body(text), 0o644, 9, 1),
    ]
}

fn sha256_of(c: Compression, level: Option<i32>, threads: usize) -> String {
    let opts = Options {
        compression: c,
        level,
        threads,
        cache: None,
        body_sha1: false,
    };
    let mut out = Vec::new();
    compress::write_image(&entries(), &opts, &mut out).unwrap();
    hex::encode(Sha256::digest(&out))
}

#[test]
fn each_compression_makes_the_pinned_bytes() {
    let pinned = [
        (
            Compression::None,
            None,
            "65fb768e87e274f8c831a8f944de8ec7f7668e9d2f3bd39b86e3b77692837770",
        ),
        (
            Compression::Gzip,
            None,
            "d45e3362df1be20a93f3680ec647ffbd9f0bb187b72486b6a836a9d6fa2f9808",
        ),
        // The earlier default (CHANGELOG.md): its images stay reproducible with `--level 9`.
        (
            Compression::Gzip,
            Some(9),
            "d0aa871e87289898d845e93ea5a11027adb3dfbe53c7a51ce20c4e091c44d783",
        ),
        (
            Compression::Zstd,
            None,
            "edd07b2fe0ce0a47b39417ab2f31bb3650a89e1bef7816d9e26ccb3002e723bb",
        ),
        (
            Compression::Xz,
            None,
            "c316866cb53689b8ee5d223e44c2ea0b7160165eefe7997aaae5014fc36f6e1d",
        ),
        (
            Compression::Lz4,
            None,
            "64296b180940e357a486150e162a5f6e25dca171a2cb38833b76a499a123d1de",
        ),
    ];
    let mut wrong = Vec::new();
    for (c, level, want) in pinned {
        let got = sha256_of(c, level, 1);
        assert_eq!(
            got,
            sha256_of(c, level, 3),
            "{} {level:?}: threads change the bytes",
            c.name()
        );
        if got != want {
            wrong.push(format!("{} {level:?}: {got} (pinned {want})", c.name()));
        }
    }
    assert!(
        wrong.is_empty(),
        "output bytes changed:\n{}",
        wrong.join("\n")
    );
}
