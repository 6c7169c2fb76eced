//! The image config's runtime fields (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts):
//! what a container runtime would start. (The plan turns them into the workload spec, the user
//! resolved through the image's own `/etc/passwd` and `/etc/group`.)

use oci_spec::image::ImageConfiguration;

/// The runtime fields of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group`, `uid:gid`, ... as written.
    pub user: Option<String>,
    /// Exposed TCP ports, ascending.
    pub ports: Vec<u16>,
}

impl ImageConfig {
    pub fn from_oci(cfg: &ImageConfiguration) -> ImageConfig {
        let Some(c) = cfg.config() else {
            return ImageConfig::default();
        };
        let mut ports: Vec<u16> = c
            .exposed_ports()
            .iter()
            .flatten()
            .filter_map(|p| match p.split_once('/') {
                Some((n, "tcp")) => n.parse().ok(),
                Some(_) => None,
                None => p.parse().ok(),
            })
            // Port 0 is no port a service listens on: a `base_url` with it reaches nothing.
            .filter(|p| *p != 0)
            .collect();
        // The config stores them as a map: order them so the build does not depend on it.
        ports.sort_unstable();
        ports.dedup();
        ImageConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
            ports,
        }
    }

    /// The program a container runtime starts: Entrypoint followed by Cmd.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}
