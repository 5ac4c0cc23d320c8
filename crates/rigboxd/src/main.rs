//! The `rigboxd` command line: `up`, `image build`, `check`, `admin`, `ingress`, `--version`.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rigboxd::config::{Accel, Config, Outbound, Role, TlsMode, VmmKind};
use std::io::Read;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

// The store's SQLite driver copies every column value of every row; glibc's allocator serializes
// those copies across threads (measured in bench/api), mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "rigboxd", version = rigboxd::VERSION, about = "Rigbox: self-hosted cloud developer workspaces")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the platform (all roles in one process by default).
    Up(UpArgs),
    /// Check host prerequisites of the node role.
    Check,
    /// Operator actions on the local control plane.
    Admin(AdminArgs),
    /// Guest kernel and images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Pipe stdin/stdout to a port of a running workspace through node ingress (for tests and
    /// debugging, e.g. `ssh -o ProxyCommand='rigboxd ingress %h 22' developer@ws-…`).
    Ingress(IngressArgs),
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Build (or confirm cached) the guest kernel and a template's image, with progress.
    Build {
        #[arg(value_parser = ["base", "dev"])]
        template: String,
        /// Rebuild even what is cached (the debootstrap stage included).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
struct IngressArgs {
    #[command(flatten)]
    common: Common,
    /// Workspace ID (`ws-…`).
    workspace: String,
    port: u16,
}

#[derive(Args, Debug)]
struct Common {
    /// TOML configuration file (default /etc/rigbox/rigboxd.toml if it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory (default $RIGBOX_DATA_DIR, else ~/.local/share/rigbox).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum)]
    role: Option<Role>,
    #[arg(long)]
    base_domain: Option<String>,
    #[arg(long)]
    listen: Option<String>,
    #[arg(long)]
    http_port: Option<u16>,
    #[arg(long)]
    https_port: Option<u16>,
    #[arg(long)]
    ssh_port: Option<u16>,
    #[arg(long, value_enum)]
    tls: Option<TlsMode>,
    /// With `--tls files`: PEM certificate chain for the base domain and its wildcard.
    #[arg(long)]
    tls_cert: Option<std::path::PathBuf>,
    /// With `--tls files`: PEM private key of that certificate.
    #[arg(long)]
    tls_key: Option<std::path::PathBuf>,
    #[arg(long, value_enum)]
    vmm: Option<VmmKind>,
    #[arg(long, value_enum)]
    accel: Option<Accel>,
    #[arg(long, value_enum)]
    vm_outbound: Option<Outbound>,
    #[arg(long)]
    region: Option<String>,
    /// Stop running VMs on exit instead of leaving them for the next start to re-adopt.
    #[arg(long)]
    stop_vms_on_exit: bool,
    /// Allow self-service signup.
    #[arg(long)]
    signup_enabled: bool,
}

#[derive(Args, Debug)]
struct AdminArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: AdminCmd,
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage credits.
    #[command(subcommand)]
    Credits(CreditsCmd),
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Create a verified account; the password is read from stdin.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        plan: Option<String>,
    },
    /// Set a new password (stdin) and revoke all sessions.
    SetPassword {
        #[arg(long)]
        email: String,
    },
    /// Change the plan.
    SetPlan {
        #[arg(long)]
        email: String,
        #[arg(long)]
        plan: String,
    },
    /// Override one limit for this user.
    SetLimit {
        #[arg(long)]
        email: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        value: i64,
    },
    /// Remove every per-user limit override.
    ClearLimits {
        #[arg(long)]
        email: String,
    },
    /// Mark the email verified.
    VerifyEmail {
        #[arg(long)]
        email: String,
    },
    /// Disable the account.
    Disable {
        #[arg(long)]
        email: String,
    },
    /// Re-enable the account.
    Enable {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand, Debug)]
enum CreditsCmd {
    /// Add (or with a negative N remove) credits.
    Adjust {
        #[arg(long)]
        email: String,
        #[arg(long, allow_hyphen_values = true)]
        credits: f64,
        #[arg(long)]
        note: String,
    },
}

fn load(common: &Common) -> anyhow::Result<Config> {
    let mut cfg = Config::load(common.config.as_deref())?;
    if let Some(d) = &common.data_dir {
        cfg.data_dir = Some(d.clone());
    }
    Ok(cfg)
}

fn apply_up_flags(cfg: &mut Config, a: &UpArgs) {
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = &a.$f { cfg.$f = v.clone(); } )* };
    }
    set!(
        role,
        base_domain,
        listen,
        http_port,
        https_port,
        ssh_port,
        tls,
        vmm,
        accel,
        vm_outbound,
        region
    );
    if a.tls_cert.is_some() {
        cfg.tls_cert = a.tls_cert.clone();
    }
    if a.tls_key.is_some() {
        cfg.tls_key = a.tls_key.clone();
    }
    cfg.stop_vms_on_exit |= a.stop_vms_on_exit;
    cfg.signup_enabled |= a.signup_enabled;
}

fn read_password() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read the password from stdin")?;
    let pw = s.lines().next().unwrap_or_default().to_owned();
    anyhow::ensure!(
        !pw.is_empty(),
        "no password on stdin (pipe it in: echo 'secret-password' | rigboxd admin user create ...)"
    );
    Ok(pw)
}

/// Builds a template's artefacts, showing progress: a spinner with the current step on a
/// terminal, plain lines otherwise.
fn build_image(template: &str, force: bool) -> anyhow::Result<rigbox_node::image::Artefacts> {
    use rigbox_node::image::Progress;
    use std::io::IsTerminal;
    let rig = rigbox_node::image::rig_binary()?;
    let tty = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new_spinner();
    if tty {
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = std::time::Instant::now();
    let mut step = String::new();
    let r = rigbox_node::image::build(template, &rig, force, &mut |p| match p {
        Progress::Step(s) => {
            let line = format!("[{:>4}s] {s}", started.elapsed().as_secs());
            if tty {
                bar.println(line);
            } else {
                eprintln!("{line}");
            }
            bar.set_message(s.clone());
            step = s;
        }
        Progress::Output(line) => {
            bar.set_message(format!(
                "{step}: {}",
                line.chars().take(60).collect::<String>()
            ));
        }
    });
    bar.finish_and_clear();
    Ok(r?)
}

async fn up(mut cfg: Config, args: &UpArgs) -> anyhow::Result<()> {
    apply_up_flags(&mut cfg, args);
    if cfg.vmm == VmmKind::Qemu {
        let missing: Vec<_> = rigboxd::check::run()
            .into_iter()
            .filter(|i| i.required && !i.ok)
            .collect();
        if !missing.is_empty() {
            for i in &missing {
                eprintln!("missing: {} ({}); fix: {}", i.name, i.detail, i.fix);
            }
            anyhow::bail!("the node role needs these host prerequisites (`rigboxd check`; or run with --vmm sim)");
        }
        if cfg.node.kernel.is_none() && rigboxd::image_artefacts("base").is_none() {
            eprintln!(
                "building the guest kernel and base image (first start only; cached in {})",
                rigbox_node::image::cache_dir().display()
            );
            tokio::task::spawn_blocking(|| build_image("base", false)).await??;
        }
    }
    let platform = rigboxd::Platform::start(&cfg).await?;
    let ready = rigboxd::ready_document(&cfg, &platform);
    let ready_path = platform.data_dir.join("ready.json");
    let tmp = ready_path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&ready)?)?;
    std::fs::rename(&tmp, &ready_path)?;
    let url = platform.api_url();
    let vmm = match cfg.vmm {
        VmmKind::Sim => "simulated VMM".to_owned(),
        VmmKind::Qemu => format!(
            "QEMU micro-VMs, {}",
            rigboxd::resolve_accel(cfg.accel).as_str()
        ),
    };
    let ssh = platform.ssh_addr;
    let https = match (platform.https_addr, &platform.ca_cert) {
        (Some(a), Some(ca)) => format!(
            "  HTTPS:    https://{}:{}/ (apps at https://<app>.{}:{}/; trust the CA {})\n",
            cfg.base_domain,
            a.port(),
            cfg.base_domain,
            a.port(),
            ca.display()
        ),
        (Some(a), None) => format!("  HTTPS:    https://{}:{}/\n", cfg.base_domain, a.port()),
        (None, _) => format!(
            "  Apps:     http://<app>.{}:{}/ (TLS off)\n",
            cfg.base_domain,
            platform.http_addr.port()
        ),
    };
    println!(
        "Rigbox {} is up ({vmm}).\n\n  Console:  {url}/\n  API:      {url}/api/v1\n{https}  SSH:      {ssh} (gateway; host key {})\n  Data dir: {}\n\nCreate the first user:\n  echo 'a-long-password' | rigboxd admin --data-dir {} user create --email you@example.com\nThen sign in the CLI, add your SSH key and start a workspace:\n  rig login --api-url {url}\n  rig ssh-key add\n  rig workspace spawn --name demo\n  rig ssh demo\n\nPress Ctrl-C to stop.",
        rigboxd::VERSION,
        platform.app.config.ssh_host_key_fingerprints.join(", "),
        platform.data_dir.display(),
        platform.data_dir.display(),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("shutting down");
    let _ = std::fs::remove_file(&ready_path);
    platform.shutdown(cfg.stop_vms_on_exit).await;
    Ok(())
}

async fn admin(cfg: Config, cmd: AdminCmd) -> anyhow::Result<()> {
    use rigbox_control::app::accounts::NewUser;
    use rigbox_control::store::UserFlag;
    let store = rigboxd::open_store(&cfg.data_dir()).await?;
    let control = rigboxd::control_config(&cfg, "");
    let app = rigbox_control::App::new(
        store,
        control,
        std::sync::Arc::new(rigbox_control::app::SystemClock),
        Vec::new(),
    );
    let r = match cmd {
        AdminCmd::User(UserCmd::Create { email, name, plan }) => {
            let password = read_password()?;
            app.create_user(NewUser {
                email,
                name,
                password,
                plan,
                email_verified: true,
            })
            .await
            .map(|u| println!("created {} ({})", u.email, u.id))
        }
        AdminCmd::User(UserCmd::SetPassword { email }) => {
            let password = read_password()?;
            app.admin_set_password(&email, password)
                .await
                .map(|_| println!("password set; all sessions revoked"))
        }
        AdminCmd::User(UserCmd::SetPlan { email, plan }) => app
            .admin_set_plan(&email, &plan)
            .await
            .map(|_| println!("plan set to {plan}")),
        AdminCmd::User(UserCmd::SetLimit { email, key, value }) => app
            .admin_set_limit(&email, Some(&key), Some(value))
            .await
            .map(|_| println!("{key} = {value} for {email}")),
        AdminCmd::User(UserCmd::ClearLimits { email }) => app
            .admin_set_limit(&email, None, None)
            .await
            .map(|_| println!("overrides cleared")),
        AdminCmd::User(UserCmd::VerifyEmail { email }) => app
            .admin_set_flag(&email, UserFlag::EmailVerified, true)
            .await
            .map(|_| println!("verified")),
        AdminCmd::User(UserCmd::Disable { email }) => app
            .admin_set_flag(&email, UserFlag::Disabled, true)
            .await
            .map(|_| println!("disabled")),
        AdminCmd::User(UserCmd::Enable { email }) => app
            .admin_set_flag(&email, UserFlag::Disabled, false)
            .await
            .map(|_| println!("enabled")),
        AdminCmd::Credits(CreditsCmd::Adjust {
            email,
            credits,
            note,
        }) => match app.user_by_email(&email).await {
            Ok(u) => app
                .adjust_credits(&u.id, credits, note)
                .await
                .map(|_| println!("adjusted by {credits} credits")),
            Err(e) => Err(e),
        },
    };
    app.store.close().await;
    r.map_err(|e| anyhow::anyhow!("{}", e.message))
}

/// `rigboxd ingress`: a stream to a running workspace's port through the node namespace.
async fn ingress(cfg: Config, a: &IngressArgs) -> anyhow::Result<()> {
    let data = cfg.data_dir();
    let ready: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("ready.json"))
            .context("rigboxd is not running on this data dir")?,
    )?;
    let ns = ready["netns"]
        .as_str()
        .context("this rigboxd runs no QEMU node")?;
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("vms").join(&a.workspace).join("state.json"))
            .with_context(|| format!("no VM of {} on this node", a.workspace))?,
    )?;
    let ip: std::net::Ipv4Addr = state["vm"]["ip"]
        .as_str()
        .with_context(|| format!("{} is not running", a.workspace))?
        .parse()?;
    let net = rigbox_node::net::Net::open(ns)?;
    let stream = net
        .connect(std::net::SocketAddrV4::new(ip, a.port))
        .await
        .with_context(|| format!("cannot connect to {ip}:{}", a.port))?;
    let (mut r, mut w) = stream.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut w).await;
        let _ = w.shutdown().await;
    };
    let mut out = tokio::io::stdout();
    let down = tokio::io::copy(&mut r, &mut out);
    // The remote closing ends the pipe even while stdin stays open.
    tokio::pin!(up, down);
    tokio::select! {
        d = &mut down => { d?; }
        _ = &mut up => { down.await?; }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RIGBOX_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs in files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Up(a) => up(load(&a.common)?, &a).await,
            Cmd::Check => {
                let items = rigboxd::check::run();
                for i in &items {
                    let state = if i.ok { "ok" } else { "missing" };
                    println!("{:<12} {:<8} {}", i.name, state, i.detail);
                    if !i.ok {
                        println!("{:<12} {:<8} fix: {}", "", "", i.fix);
                    }
                }
                let missing = items.iter().filter(|i| i.required && !i.ok).count();
                anyhow::ensure!(missing == 0, "{missing} prerequisite(s) of the QEMU node role missing (--vmm sim needs none)");
                Ok(())
            }
            Cmd::Admin(a) => admin(load(&a.common)?, a.cmd).await,
            Cmd::Image(ImageCmd::Build { template, force }) => {
                let a = tokio::task::spawn_blocking(move || build_image(&template, force)).await??;
                println!("kernel {}  {}", a.kernel_hash, a.kernel.display());
                println!("image  {}  {}", a.image_hash, a.image.display());
                Ok(())
            }
            Cmd::Ingress(a) => ingress(load(&a.common)?, &a).await,
        }
    });
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
