//! The flags of `fledge run` and what they become ([`fledge::run::start::Start`]).

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::Args;
use fledge::run::machine::AccelChoice;
use fledge::run::start::Start;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// An initramfs image to boot [default: build -c's config first].
    #[arg(conflicts_with = "config")]
    pub image: Option<PathBuf>,
    /// Build this configuration first (as `fledge build` does) and boot the result
    /// [default: fledge.toml].
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With IMAGE: the Volant manifest JSON [default: the *.manifest.json beside the image that
    /// names it]; with a config: the manifest template, as for `fledge build -m`.
    #[arg(short, long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// The kernel [default: $FLEDGE_KERNEL, /boot/vmlinuz-$(uname -r), the newest
    /// /boot/vmlinuz-*].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// More kernel command-line parameters, after Volant's.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        hide_default_value = true,
        allow_hyphen_values = true
    )]
    pub append: String,
    /// Forward host TCP port HOST to guest port GUEST (HOST 0: a free port); the workload's
    /// port from the manifest's base_url is always forwarded, from a free port unless named here.
    #[arg(long, value_name = "HOST:GUEST")]
    pub publish: Vec<String>,
    /// Acceleration: auto uses KVM only when a short probe boot works.
    #[arg(
        long,
        default_value = "auto",
        value_name = "KIND",
        value_parser = clap::builder::PossibleValuesParser::new(AccelChoice::NAMES)
            .try_map(|s| s.parse::<AccelChoice>())
    )]
    pub accel: AccelChoice,
    /// Power the guest down after this many seconds (exit status 124).
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// Write JSON events (started, booted, healthy, exited) one a line to FILE, or to stderr.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<PathBuf>,
}

impl From<RunArgs> for Start {
    fn from(a: RunArgs) -> Start {
        Start {
            image: a.image,
            config: a.config,
            manifest: a.manifest,
            kernel: a.kernel,
            append: a.append,
            publish: a.publish,
            accel: a.accel,
            timeout: a.timeout,
            json: a.json,
        }
    }
}
