//! `rigboxd check`: host prerequisites of the node role, each ok or missing with its fix.

use std::path::Path;

/// One prerequisite.
#[derive(Debug, Clone)]
pub struct Item {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    pub fix: &'static str,
    /// Needed by `--vmm qemu` (otherwise informational).
    pub required: bool,
}

fn on_path(bin: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(Into::into))
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// Whether the CPU has hardware virtualization (vmx/svm) and `/dev/kvm` opens.
pub fn kvm_usable() -> bool {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpu
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    hw && std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Runs every check.
pub fn run() -> Vec<Item> {
    let bin = |name: &'static str, b: &str, fix: &'static str| {
        let found = on_path(b);
        Item {
            name,
            ok: found.is_some(),
            detail: found.unwrap_or_else(|| format!("{b} not found")),
            fix,
            required: true,
        }
    };
    let mut items = vec![
        bin("qemu", "qemu-system-x86_64", "apt-get install -t bookworm-backports qemu-system-x86 (see README: add bookworm-backports with your mirror)"),
        bin("nft", "nft", "apt-get install nftables"),
        bin("ip", "ip", "apt-get install iproute2"),
        bin("debootstrap", "debootstrap", "apt-get install debootstrap"),
        bin("mkfs.ext4", "mkfs.ext4", "apt-get install e2fsprogs"),
        bin("qemu-img", "qemu-img", "apt-get install -t bookworm-backports qemu-utils"),
        // The guest kernel build (`rigboxd image build`).
        bin("make", "make", "apt-get install make"),
        bin("gcc", "gcc", "apt-get install gcc"),
        bin("bc", "bc", "apt-get install bc"),
        bin("flex", "flex", "apt-get install flex"),
        bin("bison", "bison", "apt-get install bison"),
        bin("xz", "xz", "apt-get install xz-utils"),
    ];
    let source = std::fs::read_dir("/usr/src").ok().and_then(|d| {
        d.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("linux-source-"))
                && p.extension().is_some_and(|e| e == "xz")
        })
    });
    items.push(Item {
        name: "linux-source",
        ok: source.is_some(),
        detail: source.map_or_else(
            || "no /usr/src/linux-source-*.tar.xz".into(),
            |p| p.display().to_string(),
        ),
        fix: "apt-get install linux-source",
        required: true,
    });
    let elf = std::path::Path::new("/usr/include/libelf.h").exists();
    items.push(Item {
        name: "libelf",
        ok: elf,
        detail: if elf {
            "/usr/include/libelf.h".into()
        } else {
            "libelf headers missing".into()
        },
        fix: "apt-get install libelf-dev",
        required: true,
    });
    let ssl = Path::new("/usr/include/openssl/opensslv.h").exists();
    items.push(Item {
        name: "libssl",
        ok: ssl,
        detail: if ssl {
            "/usr/include/openssl/opensslv.h".into()
        } else {
            "OpenSSL headers missing (the kernel's host tools need them)".into()
        },
        fix: "apt-get install libssl-dev",
        required: true,
    });
    let kvm = kvm_usable();
    items.push(Item {
        name: "accelerator",
        ok: true,
        detail: if kvm {
            "kvm (hardware virtualization available)".into()
        } else if Path::new("/dev/kvm").exists() {
            "tcg (/dev/kvm present but no VT-x/AMD-V: software emulation)".into()
        } else {
            "tcg (no /dev/kvm: software emulation)".into()
        },
        fix: "none needed; KVM is used automatically on hosts with VT-x/AMD-V",
        required: false,
    });
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_named_once_and_says_how_to_fix_it() {
        let items = run();
        let mut names: Vec<_> = items.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), items.len(), "duplicate check names");
        for want in [
            "qemu",
            "debootstrap",
            "linux-source",
            "libelf",
            "libssl",
            "bc",
            "flex",
        ] {
            assert!(names.contains(&want), "no {want} check");
        }
        for i in items.iter().filter(|i| i.required) {
            assert!(
                i.fix.starts_with("apt-get install "),
                "{}: fix is not an apt command: {}",
                i.name,
                i.fix
            );
        }
    }
}
