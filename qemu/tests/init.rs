//! fledge-init on Debian's kernel: what a workload finds in a real VM. One boot, supervise
//! mode, with a workload spec from `[init] command`/`env`/`user` and virtio-net loaded from
//! `[kernel] modules` (Debian builds `virtio_net` and `virtio_pci` as modules). The stand-in
//! opens a pty, uses `/dev/shm` and cgroup2, reads its limits, hostname and resolv.conf, and
//! connects through the `ip=`-configured interface to the user-mode network's gateway, which
//! QEMU forwards to a listener on this host; the harness reads the exit-status line.

use std::io::Write;
use std::net::TcpListener;

use fledge_qemu::host::Host;
use fledge_qemu::project::Project;
use fledge_qemu::tools::Tools;
use fledge_qemu::vm::{fields, Boot, Check};

/// The user-mode network's gateway (QEMU's default 10.0.2.0/24) and DNS address.
const GATEWAY: &str = "10.0.2.2";
const DNS: &str = "10.0.2.3";
const GREETING: &str = "FLEDGE-HOST-HELLO";

#[test]
fn workload_gets_ptys_shm_cgroup2_and_the_ip_network_and_its_status_is_read() {
    let test = "workload_gets_ptys_shm_cgroup2_and_the_ip_network_and_its_status_is_read";
    let Some(host) = Host::for_test(test) else {
        return;
    };
    let Some(tree) = host.module_tree(test) else {
        return;
    };
    let tools = Tools::get().unwrap_or_else(|e| panic!("{test}: {e}"));

    // The guest reaches this host's loopback as the gateway address.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = writeln!(s, "{GREETING}");
        }
    });

    let script = format!("devices,workload,net,connect:{GATEWAY}:{port},exit:3");
    let config = format!(
        "[init]\nsupervise = true\ncommand = [\"app\", \"one two\"]\nuser = \"1000:1000\"\n\
         [init.env]\nSTANDIN = \"{script}\"\nPATH = \"/usr/local/bin:/bin\"\n\n\
         [kernel]\nmodules = [\"virtio_net\", \"virtio_pci\"]\nmodules_dir = {:?}\n\n\
         [mappings]\n\"app\" = \"/usr/local/bin/app\"\n",
        tree.display().to_string()
    );
    let p = Project::new(&host, &config).unwrap();
    p.copy_executable(&tools.standin, "app").unwrap();
    let image = p.build(tools, "gzip", &[]).unwrap();
    let ip = format!("ip=10.0.2.15::{GATEWAY}:255.255.255.0:fledge-guest:eth0:off:{DNS}");
    let log = Boot::new("init/workload", &image)
        .param(&ip)
        .qemu_args(&["-nic", "user,model=virtio-net-pci"])
        .run(&host)
        .unwrap();
    log.assert(&[
        Check::contains("STANDIN-DEVICES pty=ok shm=ok mqueue=ok cgroup2=ok fd=ok"),
        Check::contains(&format!("STANDIN-CONNECT ok {GREETING}")),
        Check::absent("fledge-init: failed"),
        Check::NoPanic,
        Check::PowerOff,
    ]);
    let line = |marker: &str| {
        log.line(marker)
            .unwrap_or_else(|| panic!("no {marker} line:\n{}", log.serial))
    };
    let w = fields(line("STANDIN-WORKLOAD"));
    assert_eq!(w.get("argv"), Some(&"app|one"), "argv (space-split): {w:?}");
    assert_eq!(w.get("uid"), Some(&"1000"), "{w:?}");
    assert_eq!(w.get("gid"), Some(&"1000"), "{w:?}");
    assert_eq!(
        w.get("nofile"),
        Some(&"1048576/1048576"),
        "the default: {w:?}"
    );
    let net = fields(line("STANDIN-NET"));
    assert_eq!(net.get("lo"), Some(&"up"), "{net:?}");
    assert_eq!(
        net.get("hostname"),
        Some(&"fledge-guest"),
        "from ip=: {net:?}"
    );
    assert_eq!(net.get("resolv"), Some(&DNS), "{net:?}");
    let status = log
        .serial
        .lines()
        .find_map(fledge_abi::exit_status::parse)
        .unwrap_or_else(|| panic!("no exit-status line:\n{}", log.serial));
    assert_eq!(status, 3, "{}", log.serial);
    eprintln!(
        "init boot: {:.1}s wall under TCG",
        log.elapsed.as_secs_f64()
    );
}
