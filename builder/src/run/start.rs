//! Starting `fledge run` from what the command line gave ([`Start`]): build first (given a
//! config), read the manifest, and hand over to [`super::run`].

use std::path::PathBuf;
use std::time::Duration;

use super::machine::AccelChoice;
use super::{plugin, EventSink, JsonLines, Options, RunError};
use crate::pipeline::{self, Request};

/// What `fledge run` was asked to do, as the command line gives it.
#[derive(Debug)]
pub struct Start {
    /// An initramfs image to boot; `None`: build `config` first.
    pub image: Option<PathBuf>,
    /// The configuration to build [default: fledge.toml].
    pub config: Option<PathBuf>,
    /// With `image`: the Volant manifest JSON; with a config: the manifest template.
    pub manifest: Option<PathBuf>,
    /// The kernel ([`super::kernel::locate`] finds one when `None`).
    pub kernel: Option<PathBuf>,
    /// More kernel command-line parameters, after Volant's.
    pub append: String,
    /// `HOST:GUEST` port forwards, as written.
    pub publish: Vec<String>,
    pub accel: AccelChoice,
    /// Seconds before the guest is powered down.
    pub timeout: Option<u64>,
    /// Where JSON events go: a file, or `-` for stderr.
    pub json: Option<PathBuf>,
}

/// Runs `fledge run`; returns its exit status (see [`super`]).
pub fn main(a: Start, quiet: bool) -> i32 {
    match prepare_and_run(a, quiet) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e:#}");
            1
        }
    }
}

fn prepare_and_run(a: Start, quiet: bool) -> anyhow::Result<i32> {
    let publish = a
        .publish
        .iter()
        .map(|p| parse_publish(p))
        .collect::<Result<Vec<_>, _>>()?;
    for (spec, (host, _)) in a.publish.iter().zip(&publish) {
        host_port_free(spec, *host)?;
    }
    let events: Option<Box<dyn EventSink>> = match &a.json {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(JsonLines(std::io::stderr()))),
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| {
                anyhow::anyhow!("cannot write the events file {}: {e}", p.display())
            })?;
            Some(Box::new(JsonLines(f)))
        }
    };
    // Before any build: a missing kernel is the commonest first-run failure.
    let kernel = super::kernel::locate(a.kernel.as_deref())?;
    // Signals count from here, so a Ctrl-C during the build or the KVM probe still ends the
    // guest politely once it runs.
    let interrupted = super::interrupts()?;
    // Holds the built image for the length of the run.
    let _built: Option<crate::output::ScratchDir>;
    let (image, plugin) = match a.image {
        Some(image) => {
            let manifest = a.manifest.or_else(|| plugin::beside(&image));
            let plugin = match manifest {
                Some(m) => plugin::load(&m)?,
                None => {
                    log::info!(
                        "no manifest for {}: 1 CPU, 512 MiB, no port forwarded",
                        image.display()
                    );
                    plugin::Plugin::without_manifest(&image)
                }
            };
            _built = None;
            (image, plugin)
        }
        None => {
            let dir = crate::output::ScratchDir::new("fledge-run")
                .map_err(|e| anyhow::anyhow!("cannot create a temporary directory: {e}"))?;
            let config = a.config.unwrap_or_else(|| PathBuf::from("fledge.toml"));
            let mut req = Request::new(config, dir.path().join("plugin.cpio.gz"));
            req.manifest = a.manifest;
            // The build writes into `dir`, removed on every way out below; a Ctrl-C during it
            // is counted and acted on once it is done.
            let report = pipeline::build(&req)?;
            if interrupted.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                log::info!("interrupted during the build: not booting");
                return Ok(130);
            }
            if !quiet {
                log::info!(
                    "built {} ({} bytes, sha256 {})",
                    report.artifact.display(),
                    report.size,
                    report.sha256
                );
            }
            let plugin = plugin::load(&report.manifest)?;
            _built = Some(dir);
            (report.artifact, plugin)
        }
    };
    let o = Options {
        image,
        plugin,
        kernel,
        append: a.append,
        publish,
        accel: a.accel,
        timeout: a.timeout.map(Duration::from_secs),
        events,
        stream: true,
    };
    let ended = super::run(o, &interrupted)?;
    Ok(ended.code())
}

/// `HOST:GUEST` -> the two ports.
pub fn parse_publish(s: &str) -> Result<(u16, u16), RunError> {
    let bad = || RunError::Publish(s.to_owned());
    let (h, g) = s.split_once(':').ok_or_else(bad)?;
    let host: u16 = h.trim().parse().map_err(|_| bad())?;
    let guest: u16 = g.trim().parse().map_err(|_| bad())?;
    if guest == 0 {
        return Err(bad());
    }
    Ok((host, guest))
}

/// Fails when the host port of `--publish spec` is taken on 127.0.0.1, before QEMU is started
/// (which would only say it cannot set up its network); 0, a free port, always passes.
pub fn host_port_free(spec: &str, host: u16) -> anyhow::Result<()> {
    if host == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(("127.0.0.1", host))
        .map(drop)
        .map_err(|e| {
            anyhow::anyhow!(
                "--publish {spec}: port {host} on 127.0.0.1 cannot be used ({e}): choose another host port, or 0 for a free one"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_host_port_is_refused_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let spec = format!("{port}:80");
        let e = host_port_free(&spec, port).unwrap_err().to_string();
        assert!(e.contains(&format!("--publish {spec}: port {port}")), "{e}");
        drop(taken);
        host_port_free(&spec, port).unwrap();
        host_port_free("0:80", 0).unwrap();
    }

    #[test]
    fn publish_specs() {
        assert_eq!(parse_publish("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_publish("0:8080").unwrap(), (0, 8080));
        for bad in ["8080", "a:1", "1:0", "1:70000", ""] {
            let e = parse_publish(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }
}
