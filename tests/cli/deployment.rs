//! The deployment files: `docker-compose.yml` and the `Dockerfile`, checked without a container
//! engine. `docker-compose config` validates the compose file; the agentca commands its services
//! run are checked against the real binary's `--help` (a renamed subcommand, flag or variable
//! breaks the test); and the services' own shell scripts run here, outside containers, in the
//! order compose starts them: `init` on a throwaway PostgreSQL, two `serve` nodes on their own
//! copies of the seed, the one-shot token service, and the example agent enrolling against node
//! A — then one renewal against node B.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use yaml_rust2::{Yaml, YamlLoader};

use super::harness::{SERVE_VARS, Server};
use super::support::{Outcome, PASSPHRASE, bin, pem_certs, serial_hex};

/// The repository root, where the deployment files live.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose_path() -> PathBuf {
    root().join("docker-compose.yml")
}

/// The environment variables the binary reads, which must not leak in from the caller's shell.
const OWN_VARS: [&str; 6] = [
    "AGENTCA_DATA_DIR",
    "AGENTCA_PASSPHRASE",
    "AGENTCA_PASSPHRASE_FILE",
    "AGENTCA_STORE",
    "AGENTCA_EAB_KID",
    "AGENTCA_EAB_HMAC",
];

// ---- the compose file as data ----

/// One service of the compose file, merge keys (`<<`) applied.
#[derive(Debug, Clone)]
struct Service {
    name: String,
    image: Option<String>,
    build: bool,
    entrypoint: Vec<String>,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    /// `(volume, mount point)`.
    volumes: Vec<(String, String)>,
    /// Published ports: `(host address and port, container port)`.
    ports: Vec<(String, u16)>,
    /// The healthcheck's `test`, `CMD` first.
    healthcheck: Vec<String>,
}

impl Service {
    /// Whether the service runs the agentca image (built from the Dockerfile).
    fn is_agentca(&self) -> bool {
        self.build
            || self
                .image
                .as_deref()
                .is_some_and(|i| i.starts_with("agentca"))
    }

    /// The shell script the service runs, when its entrypoint is `sh -c`.
    fn script(&self) -> Option<&str> {
        let shell = self.entrypoint.first().is_some_and(|e| e.ends_with("sh"))
            && self.entrypoint.get(1).map(String::as_str) == Some("-c");
        shell.then(|| self.command.first().map(String::as_str).unwrap_or(""))
    }
}

/// A mapping with its `<<` merge keys resolved: explicit keys win over merged ones, and an
/// earlier mapping in a merged list wins over a later one (YAML merge key semantics, which
/// docker-compose applies and yaml-rust2 leaves to the caller).
fn merged(yaml: &Yaml) -> Yaml {
    match yaml {
        Yaml::Hash(hash) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            let merge_key = Yaml::String("<<".into());
            if let Some(sources) = hash.get(&merge_key) {
                let sources = match sources {
                    Yaml::Array(list) => list.clone(),
                    other => vec![other.clone()],
                };
                for source in sources.iter().rev() {
                    if let Yaml::Hash(h) = merged(source) {
                        for (k, v) in h {
                            out.insert(k, v);
                        }
                    }
                }
            }
            for (k, v) in hash {
                if *k != merge_key {
                    out.insert(k.clone(), merged(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(list) => Yaml::Array(list.iter().map(merged).collect()),
        other => other.clone(),
    }
}

fn strings(yaml: &Yaml) -> Vec<String> {
    match yaml {
        Yaml::Array(list) => list
            .iter()
            .map(|y| y.as_str().unwrap().to_owned())
            .collect(),
        Yaml::String(s) => vec![s.clone()],
        Yaml::BadValue => Vec::new(),
        other => panic!("expected a string or a list of strings, found {other:?}"),
    }
}

/// The whole compose file, merge keys applied.
fn compose() -> Yaml {
    let text = std::fs::read_to_string(compose_path()).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    assert_eq!(docs.len(), 1, "docker-compose.yml holds one document");
    merged(&docs[0])
}

fn services(doc: &Yaml) -> Vec<Service> {
    let hash = doc["services"].as_hash().expect("a services mapping");
    hash.iter()
        .map(|(name, s)| {
            let environment = match &s["environment"] {
                Yaml::Hash(h) => h
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            Yaml::String(s) => s.clone(),
                            Yaml::Integer(i) => i.to_string(),
                            Yaml::Boolean(b) => b.to_string(),
                            other => panic!("environment value {other:?}"),
                        };
                        (k.as_str().unwrap().to_owned(), value)
                    })
                    .collect(),
                Yaml::Array(list) => list
                    .iter()
                    .map(|e| {
                        let (k, v) = e.as_str().unwrap().split_once('=').unwrap();
                        (k.to_owned(), v.to_owned())
                    })
                    .collect(),
                _ => BTreeMap::new(),
            };
            let volumes = strings(&s["volumes"])
                .iter()
                .map(|v| {
                    let mut parts = v.split(':');
                    let source = parts.next().unwrap().to_owned();
                    let target = parts.next().unwrap_or_else(|| panic!("volume {v}"));
                    (source, target.to_owned())
                })
                .collect();
            Service {
                name: name.as_str().unwrap().to_owned(),
                image: s["image"].as_str().map(str::to_owned),
                build: !s["build"].is_badvalue(),
                entrypoint: strings(&s["entrypoint"]),
                command: strings(&s["command"]),
                environment,
                volumes,
                ports: strings(&s["ports"])
                    .iter()
                    .map(|p| {
                        let (host, container) = p.rsplit_once(':').unwrap();
                        let container = container.split('/').next().unwrap();
                        (host.to_owned(), container.parse().unwrap())
                    })
                    .collect(),
                healthcheck: strings(&s["healthcheck"]["test"]),
            }
        })
        .collect()
}

fn service<'a>(all: &'a [Service], name: &str) -> &'a Service {
    all.iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name} in docker-compose.yml"))
}

/// Compose's variable substitution: `$$` is a literal `$`, `${NAME:-default}` and `${NAME-…}`
/// take `vars[NAME]` or the default, `${NAME:?message}` and `${NAME}` require `vars[NAME]`.
fn interpolate(text: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {text}"));
            let expr = &body[..end];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            let value = vars.get(name).cloned();
            out.push_str(&match op.split_at(op.len().min(2)) {
                (":-", default) => value.unwrap_or_else(|| default.to_owned()),
                (":?", _) | ("", _) => value.unwrap_or_else(|| panic!("{name} is required")),
                _ if op.starts_with('-') => value.unwrap_or_else(|| op[1..].to_owned()),
                _ => panic!("unsupported substitution ${{{expr}}}"),
            });
            rest = &body[end + 1..];
        } else {
            panic!("a bare $ in docker-compose.yml (write $$ for the shell): {text}");
        }
    }
    out.push_str(rest);
    out
}

// ---- agentca invocations and the binary's --help ----

/// Splits one logical shell line into words, removing quotes. Operators come out as words of
/// their own when separated by spaces, which is how the compose scripts write them.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Where a command's arguments end in a line of shell.
fn is_shell_operator(word: &str) -> bool {
    matches!(word, "&&" | "||" | ";" | "|" | "then" | "fi")
        || word.starts_with('>')
        || word.starts_with("2>")
        || word.starts_with('<')
}

/// The argument lists of every `agentca` command a service runs.
fn invocations(service: &Service) -> Vec<Vec<String>> {
    let Some(script) = service.script() else {
        // The image's entrypoint is agentca itself: the command is its arguments.
        return if service.command.is_empty() {
            Vec::new()
        } else {
            vec![service.command.clone()]
        };
    };
    let script = script.replace("$$", "$").replace("\\\n", " ");
    let mut found = Vec::new();
    for line in script.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let words = shell_words(line);
        for (i, w) in words.iter().enumerate() {
            if w == "agentca" {
                let args: Vec<String> = words[i + 1..]
                    .iter()
                    .take_while(|w| !is_shell_operator(w))
                    .cloned()
                    .collect();
                found.push(args);
            }
        }
    }
    found
}

/// What `agentca [PATH…] --help` says: its subcommands and its options (whether each takes a
/// value), and the whole text.
#[derive(Debug)]
struct Help {
    text: String,
    commands: BTreeSet<String>,
    options: BTreeMap<String, bool>,
}

fn help(path: &[&str]) -> Help {
    let mut cmd = Command::new(bin());
    cmd.args(path).arg("--help");
    for var in OWN_VARS {
        cmd.env_remove(var);
    }
    let out = Outcome::of(&mut cmd).success();
    let mut commands = BTreeSet::new();
    let mut options = BTreeMap::new();
    let mut in_commands = false;
    for line in out.stdout.lines() {
        if line == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            match line.strip_prefix("  ") {
                Some(rest) if !rest.starts_with(' ') => {
                    if let Some(name) = rest.split_whitespace().next() {
                        commands.insert(name.to_owned());
                    }
                }
                _ if line.is_empty() => in_commands = false,
                _ => {}
            }
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            // `-h, --help`, `--listen <LISTEN>`, `--store <DIR|URL>`
            let words: Vec<&str> = trimmed.split_whitespace().collect();
            for (i, w) in words.iter().enumerate() {
                if let Some(name) = w.trim_end_matches(',').strip_prefix("--") {
                    let takes_value = words.get(i + 1).is_some_and(|n| n.starts_with('<'));
                    options.insert(name.to_owned(), takes_value);
                }
            }
        }
    }
    Help {
        text: out.stdout,
        commands,
        options,
    }
}

/// Checks one argument list against the binary: every subcommand exists, every option is
/// accepted where it stands, every option that takes a value has one. Returns the command
/// path (`token create`); the help texts read on the way go to `helps`.
fn check_invocation(service: &str, args: &[String], helps: &mut Vec<String>) -> String {
    let mut path: Vec<&str> = Vec::new();
    let mut current = help(&[]);
    let mut i = 0;
    while i < args.len() {
        let word = args[i].as_str();
        if let Some(option) = word.strip_prefix("--") {
            let (name, inline_value) = match option.split_once('=') {
                Some((n, _)) => (n, true),
                None => (option, false),
            };
            let takes_value = *current.options.get(name).unwrap_or_else(|| {
                panic!(
                    "service {service}: `{}` has no option --{name} (in `agentca {}`)",
                    ["agentca"]
                        .iter()
                        .chain(&path)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" "),
                    args.join(" ")
                )
            });
            if takes_value && !inline_value {
                assert!(
                    args.get(i + 1).is_some_and(|v| !v.starts_with("--")),
                    "service {service}: --{name} needs a value in `agentca {}`",
                    args.join(" ")
                );
                i += 1;
            }
        } else if current.commands.contains(word) {
            path.push(word);
            helps.push(std::mem::replace(&mut current, help(&path)).text);
        } else {
            assert!(
                current.commands.is_empty() || !path.is_empty(),
                "service {service}: `{word}` is not an agentca command (`agentca {}`)",
                args.join(" ")
            );
            assert!(
                current.commands.is_empty(),
                "service {service}: `agentca {}` has no subcommand {word}",
                path.join(" ")
            );
        }
        i += 1;
    }
    assert!(
        !path.is_empty() && current.commands.is_empty(),
        "service {service}: `agentca {}` names no complete command",
        args.join(" ")
    );
    helps.push(current.text);
    path.join(" ")
}

/// The `AGENTCA_…` names a text mentions.
fn agentca_variables(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("AGENTCA_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Variables that configure compose itself (substituted into the file), not the binary.
const COMPOSE_VARIABLES: [&str; 3] = [
    "AGENTCA_PASSPHRASE",
    "AGENTCA_DB_PASSWORD",
    "AGENTCA_TRUST_DOMAIN",
];

#[test]
fn compose_file_passes_docker_compose_config() {
    // An empty variables file instead of a `.env` a developer may keep beside the compose file.
    let scratch = agentca_testkit::tools::Scratch::new();
    let env_file = scratch.write("empty.env", b"");
    let run = |passphrase: Option<&str>| {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("--env-file").arg(&env_file);
        cmd.arg("-f").arg(compose_path()).args(["config", "-q"]);
        cmd.current_dir(root());
        for var in COMPOSE_VARIABLES {
            cmd.env_remove(var);
        }
        if let Some(p) = passphrase {
            cmd.env("AGENTCA_PASSPHRASE", p);
        }
        match cmd.output() {
            Ok(out) => Some(out),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                agentca_testkit::tools::missing(
                    "docker-compose",
                    "the compose file check (Debian package docker-compose)",
                );
                None
            }
            Err(e) => panic!("docker-compose: {e}"),
        }
    };
    let Some(out) = run(Some(PASSPHRASE)) else {
        return;
    };
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        agentca_testkit::tools::transcript(&out)
    );
    // Without a passphrase compose refuses to start anything, rather than create a CA whose
    // keys are not encrypted.
    let out = run(None).unwrap();
    assert!(!out.status.success(), "config accepted no passphrase");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AGENTCA_PASSPHRASE"),
        "{}",
        agentca_testkit::tools::transcript(&out)
    );
}

#[test]
fn compose_and_dockerfile_match_the_cli() {
    let doc = compose();
    let all = services(&doc);
    let agentca: Vec<&Service> = all.iter().filter(|s| s.is_agentca()).collect();
    let names: Vec<&str> = agentca.iter().map(|s| s.name.as_str()).collect();
    for expected in ["init", "node-a", "node-b", "enroll-token", "agent"] {
        assert!(names.contains(&expected), "no agentca service {expected}");
    }

    // Every agentca command, option and variable the services use exists in the binary.
    let mut helps = Vec::new();
    let mut commands = BTreeSet::new();
    for s in &agentca {
        let calls = invocations(s);
        assert!(
            !calls.is_empty(),
            "service {} runs no agentca command",
            s.name
        );
        for args in &calls {
            commands.insert(check_invocation(&s.name, args, &mut helps));
        }
    }
    let documented: BTreeSet<String> = helps.iter().flat_map(|h| agentca_variables(h)).collect();
    for s in &agentca {
        let mut used: BTreeSet<String> = s.environment.keys().cloned().collect();
        used.extend(agentca_variables(s.script().unwrap_or("")));
        for var in used.iter().filter(|v| v.starts_with("AGENTCA_")) {
            // A compose variable inside ${…} is compose's; the binary reads what the
            // environment mapping sets.
            let only_compose =
                COMPOSE_VARIABLES.contains(&var.as_str()) && !s.environment.contains_key(var);
            assert!(
                only_compose || documented.contains(var),
                "service {}: the binary reads no variable {var}",
                s.name
            );
        }
    }
    // The flow the compose file promises, in commands.
    for needed in ["init", "serve", "token create", "enroll", "renew"] {
        assert!(
            commands.contains(needed),
            "no service runs `agentca {needed}`: {commands:?}"
        );
    }

    // The Dockerfile builds the binary the services run and makes their mount points.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("cargo build --release --locked --bin agentca"),
        "the Dockerfile does not build the agentca binary"
    );
    assert!(dockerfile.contains(r#"ENTRYPOINT ["agentca"]"#));
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let bins = manifest["bin"].as_array().unwrap();
    assert!(
        bins.iter().any(|b| b["name"].as_str() == Some("agentca")),
        "Cargo.toml has no agentca binary"
    );
    // The build image's toolchain is at least the workspace's rust-version.
    let msrv = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    let toolchain = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|rest| rest.split(['-', ' ']).next())
        .expect("a FROM rust:VERSION line");
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        version(toolchain) >= version(msrv),
        "the Dockerfile builds with Rust {toolchain}, older than rust-version {msrv}"
    );
    for s in &agentca {
        for (_, target) in &s.volumes {
            assert!(
                dockerfile.contains(target.as_str()),
                "service {}: the image does not create its mount point {target}, so a new \
                 volume there would belong to root",
                s.name
            );
        }
    }
    check_build_context(&dockerfile, &manifest);

    // Published ports lead to what the nodes listen on, no host port is taken twice, and the
    // agent's ACME URL names node-a's HTTPS port.
    let mut host_ports = BTreeSet::new();
    for s in &all {
        for (host, _) in &s.ports {
            assert!(
                host_ports.insert(host.clone()),
                "host port {host} published twice"
            );
        }
    }
    for name in ["node-a", "node-b"] {
        let node = service(&all, name);
        let serve = invocations(node)
            .into_iter()
            .find(|args| args.iter().any(|a| a == "serve"))
            .unwrap();
        let flag = |option: &str| {
            let at = serve.iter().position(|a| a == option).unwrap();
            let addr: std::net::SocketAddr = serve[at + 1].parse().unwrap();
            addr.port()
        };
        let (https, http) = (flag("--listen"), flag("--http-listen"));
        let published: BTreeSet<u16> = node.ports.iter().map(|(_, c)| *c).collect();
        assert_eq!(
            published,
            BTreeSet::from([https, http]),
            "{name}: {:?}",
            node.ports
        );
        if name == "node-a" {
            let acme = format!("https://node-a:{https}/acme/directory");
            assert!(
                service(&all, "agent")
                    .script()
                    .is_some_and(|s| s.contains(&acme)),
                "the agent does not enroll at {acme}"
            );
        }
    }

    // Nodes must not share what stays per node.
    let node_volume = |name: &str| {
        service(&all, name)
            .volumes
            .iter()
            .find(|(_, t)| t == "/var/lib/agentca/node")
            .unwrap_or_else(|| panic!("{name} has no data directory volume"))
            .0
            .clone()
    };
    assert_ne!(node_volume("node-a"), node_volume("node-b"));
    assert_ne!(node_volume("node-a"), node_volume("enroll-token"));
}

/// The build stage copies everything `cargo build` reads, and `.dockerignore` keeps none of it
/// out: every workspace member, the binary's sources, and every file a crate includes at
/// compile time (the default policy).
fn check_build_context(dockerfile: &str, manifest: &toml::Table) {
    let build_stage = dockerfile
        .split("\nFROM ")
        .find(|stage| stage.starts_with("rust:") || stage.contains("FROM rust:"))
        .expect("a build stage FROM rust");
    let sources: Vec<String> = build_stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|rest| !rest.starts_with("--"))
        .flat_map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    let copied = |path: &str| {
        sources
            .iter()
            .any(|s| path == s || path.starts_with(&format!("{s}/")))
    };
    let mut needed = vec!["Cargo.toml".to_owned(), "Cargo.lock".to_owned()];
    for member in manifest["workspace"]["members"].as_array().unwrap() {
        needed.push(member.as_str().unwrap().to_owned());
    }
    for bin in manifest["bin"].as_array().unwrap() {
        needed.push(bin["path"].as_str().unwrap().to_owned());
    }
    let mut dirs = vec![root().join("src")];
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        dirs.push(entry.unwrap().path().join("src"));
    }
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (_, rest) in text
                .match_indices("include_str!(\"")
                .chain(text.match_indices("include_bytes!(\""))
                .map(|(i, m)| (i, &text[i + m.len()..]))
            {
                let literal = &rest[..rest.find('"').unwrap()];
                let mut full = PathBuf::new();
                for part in path.parent().unwrap().join(literal).components() {
                    match part {
                        std::path::Component::ParentDir => {
                            full.pop();
                        }
                        other => full.push(other),
                    }
                }
                let relative = full.strip_prefix(root()).unwrap_or_else(|_| {
                    panic!(
                        "{} includes {literal}, outside the repository",
                        path.display()
                    )
                });
                needed.push(relative.display().to_string());
            }
        }
    }
    for path in &needed {
        assert!(
            copied(path),
            "the Dockerfile's build stage does not COPY {path} (copies {sources:?})"
        );
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for pattern in ignore.lines().map(str::trim) {
        if pattern.is_empty() || pattern.starts_with('#') || pattern.starts_with('!') {
            continue;
        }
        let pattern = pattern.trim_end_matches('/');
        for source in &sources {
            assert!(
                source != pattern && !source.starts_with(&format!("{pattern}/")),
                ".dockerignore excludes {pattern}, which the Dockerfile copies"
            );
        }
    }
}

// ---- the compose scripts, run here ----

/// Runs the compose services' scripts on this machine: each volume becomes a directory, the
/// `agentca` they call is the binary under test, the store is a throwaway database.
struct Local {
    dir: tempfile::TempDir,
    store: String,
    vars: BTreeMap<&'static str, String>,
}

impl Local {
    fn volume(&self, name: &str) -> PathBuf {
        self.dir.path().join("volumes").join(name)
    }

    /// `sh -c SCRIPT` for `service`, its mount points replaced by volume directories, then
    /// `replace` applied (listen addresses, host names).
    fn command(&self, service: &Service, replace: &[(&str, String)]) -> Command {
        let script = service.script().expect("a sh -c service");
        let mut script = interpolate(script, &self.vars);
        let mut env: BTreeMap<String, String> = service
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), interpolate(v, &self.vars)))
            .collect();
        // Longest mount points first, so that no mount point is replaced inside another.
        let mut volumes = service.volumes.clone();
        volumes.sort_by_key(|(_, t)| std::cmp::Reverse(t.len()));
        for (name, target) in &volumes {
            let dir = self.volume(name);
            std::fs::create_dir_all(&dir).unwrap();
            let dir = dir.display().to_string();
            script = script.replace(target.as_str(), &dir);
            for value in env.values_mut() {
                *value = value.replace(target.as_str(), &dir);
            }
        }
        for (from, to) in replace {
            script = script.replace(from, to);
        }
        env.insert("AGENTCA_STORE".into(), self.store.clone());
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        for var in OWN_VARS.iter().chain(SERVE_VARS.iter()) {
            cmd.env_remove(var);
        }
        cmd.envs(env);
        let bin_dir = self.dir.path().join("bin");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin_dir];
        paths.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(paths).unwrap());
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn run(&self, service: &Service) -> Outcome {
        Outcome::of(&mut self.command(service, &[]))
    }

    /// An operator command through a node's data directory (its admin socket while it runs).
    fn agentca(&self, data_dir: &Path, args: &[&str]) -> Outcome {
        let mut cmd = Command::new(bin());
        for var in OWN_VARS {
            cmd.env_remove(var);
        }
        cmd.env("AGENTCA_PASSPHRASE", PASSPHRASE)
            .env("AGENTCA_STORE", &self.store)
            .arg("--data-dir")
            .arg(data_dir)
            .args(args);
        Outcome::of(&mut cmd)
    }
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The leaf's serial and its URI SAN.
fn leaf(cert: &Path) -> (String, String) {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let chain = pem_certs(&std::fs::read_to_string(cert).unwrap());
    let (_, parsed) = X509Certificate::from_der(&chain[0]).unwrap();
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    let uri = san
        .value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .unwrap();
    (serial_hex(&chain[0]), uri)
}

fn serials(doc: &serde_json::Value) -> Vec<String> {
    doc["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["serial"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_compose_flow_runs_outside_containers() {
    let Some(cluster) = agentca_testkit::postgres::shared() else {
        return;
    };
    let doc = compose();
    let all = services(&doc);
    let local = Local {
        dir: tempfile::Builder::new()
            .prefix("agentca-compose")
            .tempdir()
            .unwrap(),
        store: cluster.fresh_database(),
        vars: BTreeMap::from([("AGENTCA_PASSPHRASE", PASSPHRASE.to_owned())]),
    };
    let bin_dir = local.dir.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(bin(), bin_dir.join("agentca")).unwrap();

    // init: creates the CA once; a second run (every `docker compose up`) changes nothing.
    let init = service(&all, "init");
    let first = local.run(init).success();
    assert!(first.stdout.contains("Created a CA"), "{first}");
    let seed = local.volume("seed");
    let root_before = std::fs::read(seed.join("root.pem")).unwrap();
    let again = local.run(init).success();
    assert!(again.stdout.contains("nothing to do"), "{again}");
    assert_eq!(std::fs::read(seed.join("root.pem")).unwrap(), root_before);

    // Both nodes on their own copies of the seed. Ports: free ones instead of the container's.
    let listen = [
        ("0.0.0.0:8443", "127.0.0.1:0".to_owned()),
        ("0.0.0.0:8080", "127.0.0.1:0".to_owned()),
    ];
    let node_a = Server::start(local.command(service(&all, "node-a"), &listen));
    let node_b = Server::start(local.command(service(&all, "node-b"), &listen));
    let data_a = local.volume("node-a-data");
    let data_b = local.volume("node-b-data");
    assert_ne!(
        node_a.admin, node_b.admin,
        "the nodes share an admin socket"
    );
    assert!(
        node_a.admin.starts_with(&data_a),
        "{}",
        node_a.admin.display()
    );
    assert!(
        node_b.admin.starts_with(&data_b),
        "{}",
        node_b.admin.display()
    );
    for data in [&data_a, &data_b] {
        assert_eq!(std::fs::read(data.join("root.pem")).unwrap(), root_before);
        assert!(
            data.join(".copied-from-seed").exists(),
            "{}",
            data.display()
        );
    }

    // The nodes' healthcheck (bash, no curl in the image) sees them healthy.
    let check = &service(&all, "node-a").healthcheck;
    assert_eq!(check.first().map(String::as_str), Some("CMD"), "{check:?}");
    for node in [&node_a, &node_b] {
        let args: Vec<String> = check[2..]
            .iter()
            .map(|a| a.replace("127.0.0.1/8080", &format!("127.0.0.1/{}", node.http.port())))
            .collect();
        let mut probe = Command::new(&check[1]);
        probe.args(&args);
        Outcome::of(&mut probe).success();
    }

    // enroll-token: the example agent registered, its credential and the root handed over.
    let token = service(&all, "enroll-token");
    local.run(token).success();
    let boot = local.volume("bootstrap");
    let credential: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(boot.join("token.json")).unwrap()).unwrap();
    let agent_id = interpolate(&token.environment["AGENT_ID"], &local.vars);
    assert_eq!(credential["agent"], agent_id.as_str(), "{credential:#}");
    assert_eq!(std::fs::read(boot.join("root.pem")).unwrap(), root_before);
    let again = local.run(token).success();
    assert!(again.stdout.contains("nothing to do"), "{again}");

    // agent: enrolls against node A, then runs the renewal daemon (stopped here once the
    // certificate is in place).
    let agent = service(&all, "agent");
    let mut cmd = local.command(agent, &[("https://node-a:8443", node_a.https_url(""))]);
    let log = local.dir.path().join("agent.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut daemon = Killed(
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap(),
    );
    let agent_dir = local.volume("agent-data");
    let cert = agent_dir.join("cert.pem");
    let key = agent_dir.join("key.pem");
    wait_until("the agent's enrollment", Duration::from_secs(30), || {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("the agent exited ({status}):\n{text}");
        }
        // The script marks the credential spent, then removes it (in that order, so that a
        // crash between the two never makes enroll-token issue a second one): wait for both.
        boot.join("enrolled").exists() && !boot.join("token.json").exists()
    });
    let (first_serial, uri) = leaf(&cert);
    assert_eq!(uri, agent_id);
    drop(daemon);

    // Node B sees what node A issued: one database.
    let listed = local.agentca(
        &data_b,
        &["--output", "json", "cert", "list", "--agent", &agent_id],
    );
    assert_eq!(
        serials(&listed.success().json()),
        vec![first_serial.clone()]
    );

    // One renewal against node B: the account made through node A, used through node B, as an
    // agent would after its CA's name moved to the other node.
    let record = agent_dir.join(".agentca").join("enrollment.json");
    let text = std::fs::read_to_string(&record).unwrap();
    let a = node_a.https.to_string();
    assert!(text.contains(&a), "{text}");
    std::fs::write(&record, text.replace(&a, &node_b.https.to_string())).unwrap();
    let mut renew = Command::new(bin());
    for var in OWN_VARS {
        renew.env_remove(var);
    }
    renew
        .arg("renew")
        .arg("--key")
        .arg(&key)
        .arg("--cert")
        .arg(&cert)
        .current_dir(local.dir.path());
    let renewed = Outcome::of(&mut renew).success();
    let (second_serial, uri) = leaf(&cert);
    assert_eq!(uri, agent_id);
    assert_ne!(second_serial, first_serial, "{renewed}");
    let listed = local.agentca(
        &data_a,
        &["--output", "json", "cert", "list", "--agent", &agent_id],
    );
    let mut got = serials(&listed.success().json());
    got.sort();
    let mut want = vec![first_serial, second_serial.clone()];
    want.sort();
    assert_eq!(got, want);

    // Each node kept its own audit log: node B's records the renewal, node A's does not.
    let audit_a = std::fs::read_to_string(data_a.join("audit.log")).unwrap();
    let audit_b = std::fs::read_to_string(data_b.join("audit.log")).unwrap();
    assert!(audit_b.contains(&second_serial), "{audit_b}");
    assert!(!audit_a.contains(&second_serial), "{audit_a}");
    drop(node_b);
    drop(node_a);
}
