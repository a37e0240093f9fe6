//! A server given as one command line (`--mcp "npx -y @modelcontextprotocol/server-filesystem
//! ./docs"`): split into words as a POSIX shell would, and a server name derived from it.

use crate::naming;

/// Splits `line` into words: whitespace separates words; `'…'` keeps everything literally;
/// `"…"` keeps everything but lets `\` escape `"`, `\`, `$` and `` ` ``; outside quotes `\`
/// escapes any character. No variables, globs or pipes: the words go to the program as
/// they are. Fails on an unterminated quote or a trailing `\`.
///
/// A Windows path written unquoted is read as Windows reads it (see [`windows_program`]
/// and [`split_words`]): `C:\Program Files\x\server.exe --root D:\data` is the program
/// `C:\Program Files\x\server.exe` with `--root` and `D:\data`, where a shell would eat
/// every `\` (`C:Program`, `Filesxserver.exe`), which starts nothing and names the server
/// after half a path.
pub fn split(line: &str) -> Result<Vec<String>, String> {
    match windows_program(line) {
        Some((program, rest)) => {
            let mut words = vec![program.to_owned()];
            words.extend(split_words(rest)?);
            Ok(words)
        }
        None => split_words(line),
    }
}

/// The name of the variable `word` sets when it is a shell's `NAME=VALUE` (`GITHUB_TOKEN=…`:
/// a name of ASCII letters, digits and `_`, not starting with a digit), which a shell reads
/// before a program as a variable to set for it.
pub(crate) fn sets_a_variable(word: &str) -> Option<&str> {
    let (name, _value) = word.split_once('=')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(name)
}

/// Extensions of the programs Windows runs.
const WINDOWS_PROGRAM_EXTENSIONS: &[&str] = &[".exe", ".com", ".bat", ".cmd"];

/// The program of `line` when it starts with an unquoted Windows path to a program
/// (`C:\Program Files\x\server.exe`, or a share's `\\host\share\x.exe`), spaces and
/// all, and the rest of the line: as Windows reads such a line, the program runs up to the
/// first whitespace-separated piece ending in a program's extension. Pieces holding a
/// quote or starting with `-` or `/` (an option) end the search: a path is quoted, or has
/// ended, by then. So does a `\` that escapes what a shell needs escaped
/// (`C:\\tools\\x.exe`, `C:\Program\ Files\x.exe`): the line is written for a shell, and
/// read as one ([`split_words`]).
fn windows_program(line: &str) -> Option<(&str, &str)> {
    let line = line.trim_start();
    // A share's path (`\\server\share\x.exe`) starts with `\\` and a name: a shell reads
    // that `\\` as one `\`, so the program `\serversharex.exe`, which no line means; so its
    // first two `\` are no shell escape. `\\\\server\\…` is written for a shell.
    let unc = line.starts_with(r"\\") && line[2..].starts_with(|c: char| !escaped_by_a_shell(c));
    if !starts_with_drive(line) && !unc {
        return None;
    }
    let mut start = 0;
    for piece in line.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        let end = start + word.len();
        let first = start == 0;
        start += piece.len();
        if word.is_empty() {
            continue;
        }
        if word.contains(['\'', '"']) || (!first && word.starts_with(['-', '/'])) {
            return None;
        }
        let lower = word.to_ascii_lowercase();
        if WINDOWS_PROGRAM_EXTENSIONS
            .iter()
            .any(|ext| lower.ends_with(ext))
        {
            let program = &line[..end];
            let shell_escape = (program.match_indices('\\'))
                .skip(if unc { 2 } else { 0 })
                .any(|(at, _)| (line[at + 1..].chars().next()).is_none_or(escaped_by_a_shell));
            return (!shell_escape).then(|| line.split_at(end));
        }
    }
    None
}

/// Whether `text` starts with a Windows drive's path (`C:\`).
fn starts_with_drive(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 3 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' && bytes[2] == b'\\'
}

/// [`split`] without the Windows program: a word starting with a drive's path (`C:\x`,
/// also after `=`, `--root=D:\data`) keeps each `\` that escapes nothing a shell needs
/// escaped (whitespace, a quote, `\`, `$`, `` ` ``), a path's separator: no shell line
/// means `C:\x` as `C:x`, and `C:\\x` or `C:\ x` keep their shell reading.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut windows_path = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                    windows_path = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".to_owned()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".to_owned()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".to_owned()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) if windows_path && !escaped_by_a_shell(c) => {
                        word.push('\\');
                        word.push(c);
                    }
                    Some(c) => word.push(c),
                    None => return Err("the line ends with a lone `\\`".to_owned()),
                }
            }
            c => {
                if (word.is_empty() || word.ends_with('=')) && !windows_path {
                    windows_path = c.is_ascii_alphabetic() && chars.as_str().starts_with(":\\");
                }
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Whether a shell line needs `\` before `c` to keep it in a word: whitespace, a quote,
/// `\`, `$` or `` ` ``.
fn escaped_by_a_shell(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\'' | '"' | '\\' | '$' | '`')
}

/// Programs that run another program or package named by a later word.
const LAUNCHERS: &[&str] = &[
    "npx", "bunx", "uvx", "pipx", "pnpm", "yarn", "npm", "uv", "node", "deno", "bun", "python",
    "python3", "docker", "podman",
];

/// Words after a launcher that are sub-commands, not the thing launched.
const SUBCOMMANDS: &[&str] = &["run", "dlx", "exec", "x", "tool"];

/// Launchers that run a container image, whose options below take the next word as their
/// value.
const CONTAINER_LAUNCHERS: &[&str] = &["docker", "podman"];

/// Words after a container launcher that name a group of its commands (`docker container
/// run IMAGE`, `docker compose run SERVICE`), not the image: what is launched comes after.
const CONTAINER_COMMAND_GROUPS: &[&str] = &["compose", "container"];

/// Options of `docker` and `podman`, before `run` and after it, whose value is the next
/// word (`-e NAME`, `-v SRC:DST`, `--pull always`, `--context prod`): that word is not the
/// image. Every one they take, not just the common ones: a value taken for the image names
/// the server, and a value may be a secret (`podman run --creds user:password`), which as
/// the server's name would prefix every tool name sent to the model. Flags that take none
/// (`-i`, `-t`, `-it`, `--rm`, `-d`, `--init`, `--privileged`, `-P`, `--read-only`) are not
/// here, nor is an option given with its value in one word (`--network=host`, `-eA=b`).
#[rustfmt::skip]
const CONTAINER_VALUE_OPTIONS: &[&str] = &[
    // Before `run`: where the engine is (docker, then podman).
    "-c", "--context", "--config", "-H", "--host", "-l", "--log-level", "--tlscacert",
    "--tlscert", "--tlskey", "--connection", "--url", "--identity", "--root", "--runroot",
    "--storage-driver", "--storage-opt", "--cgroup-manager", "--conmon", "--events-backend",
    "--hooks-dir", "--imagestore", "--module", "--network-cmd-path", "--network-config-dir",
    "--runtime", "--runtime-flag", "--ssh", "--tmpdir", "--volumepath",
    // `docker run`.
    "--add-host", "--annotation", "-a", "--attach", "--blkio-weight", "--blkio-weight-device",
    "--cap-add", "--cap-drop", "--cgroup-parent", "--cgroupns", "--cidfile", "--cpu-period",
    "--cpu-quota", "--cpu-rt-period", "--cpu-rt-runtime", "--cpu-shares", "--cpus",
    "--cpuset-cpus", "--cpuset-mems", "--detach-keys", "--device", "--device-cgroup-rule",
    "--device-read-bps", "--device-read-iops", "--device-write-bps", "--device-write-iops",
    "--dns", "--dns-opt", "--dns-option", "--dns-search", "--domainname", "--entrypoint", "-e",
    "--env", "--env-file", "--expose", "--gpus", "--group-add", "--health-cmd",
    "--health-interval", "--health-retries", "--health-start-interval", "--health-start-period",
    "--health-timeout", "-h", "--hostname", "--ip", "--ip6", "--ipc", "--isolation",
    "--kernel-memory", "--label", "--label-file", "--link", "--link-local-ip", "--log-driver",
    "--log-opt", "--mac-address", "-m", "--memory", "--memory-reservation", "--memory-swap",
    "--memory-swappiness", "--mount", "--name", "--net", "--network", "--net-alias",
    "--network-alias", "--oom-score-adj", "--pid", "--pids-limit", "--platform", "-p",
    "--publish", "--pull", "--restart", "--security-opt", "--shm-size", "--stop-signal",
    "--stop-timeout", "--sysctl", "--tmpfs", "--ulimit", "-u", "--user", "--userns", "--uts",
    "-v", "--volume", "--volume-driver", "--volumes-from", "-w", "--workdir",
    // `podman run`, besides.
    "--arch", "--authfile", "--cgroup-conf", "--cgroups", "--chrootdirs", "--conmon-pidfile",
    "--creds", "--decryption-key", "--env-merge", "--gidmap", "--group-entry", "--hostuser",
    "--image-volume", "--init-path", "--os", "--passwd-entry", "--personality", "--pidfile",
    "--pod", "--pod-id-file", "--preserve-fd", "--preserve-fds", "--rdt-class", "--requires",
    "--retry", "--retry-delay", "--sdnotify", "--seccomp-policy", "--secret",
    "--shm-size-systemd", "--subgidname", "--subuidname", "--systemd", "--timeout", "--uidmap",
    "--umask", "--unsetenv", "--variant",
    // `docker compose`, before `run` (the service's options are `docker run`'s), and
    // `compose exec --index N`.
    "-f", "--file", "--ansi", "--parallel", "--profile", "--progress", "--project-directory",
    "--project-name", "--index",
];

/// Options of `npx`, `npm exec`, `pnpm dlx` and `yarn dlx` whose value is the next word
/// (`--package pkg`, `--registry URL`): that word is not what is run.
#[rustfmt::skip]
const NPM_VALUE_OPTIONS: &[&str] = &[
    "-p", "--package", "--registry", "--cache", "--userconfig", "--globalconfig", "-c", "--call",
    "--prefix", "-w", "--workspace", "-C", "--dir", "--auth-type",
];

/// Options of `bunx` and `bun` whose value is the next word.
#[rustfmt::skip]
const BUN_VALUE_OPTIONS: &[&str] = &[
    "-p", "--package", "--cwd", "--env-file", "-r", "--preload", "-c", "--config",
];

/// Options of `uvx`, `uv run` and `uv tool run` whose value is the next word (`--python
/// 3.12`, `--from git+https://…`, `--with mcp[cli]`): that word is not what is run.
#[rustfmt::skip]
const UV_VALUE_OPTIONS: &[&str] = &[
    "-p", "--python", "--from", "--with", "--with-editable", "--with-requirements",
    "--index", "--index-url", "-i", "--extra-index-url", "--default-index", "-f",
    "--find-links", "--directory", "--project", "--env-file", "--cache-dir", "--config-file",
    "--package", "--group", "--extra", "-c", "--constraints", "--overrides", "-C",
    "--config-setting", "--color", "--index-strategy", "--keyring-provider", "--resolution",
    "--prerelease", "--exclude-newer", "--python-preference", "--link-mode", "-P",
    "--upgrade-package", "--reinstall-package", "--refresh-package", "--allow-insecure-host",
    // `uv run`'s, negated but taking a value all the same (`--no-group dev`).
    "--only-group", "--no-group", "--no-extra", "--no-binary-package", "--no-build-package",
];

/// Options of `pipx run` whose value is the next word (`--spec git+https://…`).
#[rustfmt::skip]
const PIPX_VALUE_OPTIONS: &[&str] = &[
    "--spec", "--python", "--index-url", "-i", "--pip-args", "--backend",
];

/// Options of `node` whose value is the next word (`-r dotenv/config`, `--import tsx`).
#[rustfmt::skip]
const NODE_VALUE_OPTIONS: &[&str] = &[
    "-r", "--require", "--import", "--loader", "--experimental-loader", "--env-file",
    "-C", "--conditions", "--title", "--input-type",
];

/// Options of `deno run` whose value is the next word; `--allow-*`, `--env-file` and the
/// others whose value is optional take it only as `--allow-net=host`, one word.
#[rustfmt::skip]
const DENO_VALUE_OPTIONS: &[&str] = &[
    "-c", "--config", "--import-map", "--cert", "--location", "--seed", "--ext", "-L",
    "--log-level",
];

/// Options of `python` whose value is the next word. Not `-m`: the module it runs names
/// the server.
const PYTHON_VALUE_OPTIONS: &[&str] = &["-W", "-X", "--check-hash-based-pycs"];

/// The options of `launcher` whose value is the next word.
fn value_options(launcher: &str) -> &'static [&'static str] {
    match launcher {
        "docker" | "podman" => CONTAINER_VALUE_OPTIONS,
        "npx" | "npm" | "pnpm" | "yarn" => NPM_VALUE_OPTIONS,
        "bunx" | "bun" => BUN_VALUE_OPTIONS,
        "uvx" | "uv" => UV_VALUE_OPTIONS,
        "pipx" => PIPX_VALUE_OPTIONS,
        "node" => NODE_VALUE_OPTIONS,
        "deno" => DENO_VALUE_OPTIONS,
        "python" | "python3" => PYTHON_VALUE_OPTIONS,
        _ => &[],
    }
}

/// Words in an option's name that say its value may be a secret (`--token TOK3N`,
/// `--api-key KEY`), read in any case.
const SECRET_OPTION_WORDS: &[&str] = &[
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "auth",
    "authorization",
    "credential",
    "bearer",
];

/// Whether `word` is an option (`--token`, `--api-key`, `--npm-TOKEN`) without its value
/// (no `=`) whose name says its value may be a secret: the next word is then never a name,
/// for any launcher. Its name's last part (after a `-`, `_`, `.`, `:` or `/`) names the
/// secret (`token`, `apikey`, `credentials`): a flag merely about one (`--use-token-cache`,
/// `--token-cache`) takes no value, and the word after it is the package. A negated flag
/// (`--no-auth`) takes none either.
pub(crate) fn names_a_secret(word: &str) -> bool {
    let name = word.trim_start_matches('-').to_ascii_lowercase();
    let last = name.rsplit(['-', '_', '.', ':', '/']).next().unwrap_or("");
    let last = last.strip_suffix('s').unwrap_or(last);
    word.starts_with('-')
        && !name.starts_with("no-")
        && !word.contains('=')
        && SECRET_OPTION_WORDS
            .iter()
            .any(|secret| last.ends_with(secret))
}

/// Whether `word`, an argument of `launcher`, says the launcher runs code given on the
/// command line (`python -c CODE`, `python -Ic CODE`, `node -e CODE`, `node --print=CODE`,
/// `bun --eval CODE`), not a package or a script: code is no name, and may hold a secret
/// (`-c "connect('postgresql://u:pw@h')"`), so such a server is named after its launcher.
/// `deno eval` is read by [`launched`], `eval` being a sub-command.
fn runs_code(launcher: &str, word: &str) -> bool {
    let eval = |options: &[&str]| {
        let option = word.split_once('=').map_or(word, |(option, _code)| option);
        options.contains(&option)
    };
    match launcher {
        "python" | "python3" => python_options_run_code(word),
        "node" => eval(&["-e", "--eval", "-p", "--print", "-pe"]),
        "bun" => eval(&["-e", "--eval", "--print"]),
        // `pnpm dlx -c 'a | b'` (shell mode) runs a shell line: npm's `-c` takes a value.
        "pnpm" => eval(&["-c", "--shell-mode"]),
        _ => false,
    }
}

/// Whether `word` is a group of `python`'s one-letter options (`-c`, `-Bc`, `-cCODE`)
/// holding `-c`: before any option that takes the rest as its value (`-W`, `-X`, `-m`).
fn python_options_run_code(word: &str) -> bool {
    let Some(letters) = word.strip_prefix('-').filter(|l| !l.starts_with('-')) else {
        return false;
    };
    for letter in letters.chars() {
        match letter {
            'c' => return true,
            'W' | 'X' | 'm' => return false,
            _ => {}
        }
    }
    false
}

/// The word of `args` naming what `launcher` runs: the first that is no option, no
/// sub-command, no option's value and no `NAME=VALUE`. Such an assignment (`docker run -e
/// TOKEN=ghp_…`) sets a variable, often to a secret, which as the server's name would
/// prefix every tool name sent to the model and stored in its sessions; so would an
/// option's value (`npx --token TOK3N pkg`, `uvx --python 3.12 mcp-server-fetch`).
///
/// None when the launcher runs code given on the command line ([`runs_code`], `deno
/// eval`): the server is then named after the launcher.
fn launched<'a>(launcher: &str, args: &'a [String]) -> Option<&'a str> {
    let container = CONTAINER_LAUNCHERS.contains(&launcher);
    let value_options = value_options(launcher);
    let mut words = args.iter().map(String::as_str);
    let mut first = true;
    let mut exec = false;
    while let Some(word) = words.next() {
        let deno_eval = launcher == "deno" && first && word == "eval";
        first &= word.starts_with('-');
        exec |= word == "exec";
        // `podman exec -l` is `--latest`, a flag; docker's `-l` (`--log-level`, `--label`).
        let flag = launcher == "podman" && exec && word == "-l";
        if deno_eval || runs_code(launcher, word) {
            return None;
        } else if (value_options.contains(&word) && !flag) || names_a_secret(word) {
            words.next();
        } else if container && CONTAINER_COMMAND_GROUPS.contains(&word) {
            continue;
        } else if !word.starts_with('-') && !SUBCOMMANDS.contains(&word) && !word.contains('=') {
            return Some(if container { untagged(word) } else { word });
        }
    }
    None
}

/// The image `image` without its tag or digest (`mcp/github:1.2`, `mcp/github@sha256:…` →
/// `mcp/github`), as an npm package's version is dropped: the name must stay when the
/// image is upgraded, or every tool name changes with it, and the stored sessions' calls
/// name tools no longer there. A registry's port (`localhost:5000/x`) is not a tag.
fn untagged(image: &str) -> &str {
    let name_at = image.rfind('/').map_or(0, |slash| slash + 1);
    let name = &image[name_at..];
    let name = name.split_once('@').map_or(name, |(name, _digest)| name);
    let name = name.split_once(':').map_or(name, |(name, _tag)| name);
    &image[..name_at + name.len()]
}

/// A server name for `program args…`: the package or script a launcher runs (`npx -y
/// @scope/server-files@1.2` → `server-files`, `node pkg/dist/index.js` → `pkg`), else the
/// program's own name, made a valid [prefix](naming::server_prefix).
pub fn derive_name(program: &str, args: &[String]) -> String {
    let stem = |word: &str| {
        let last = word.rsplit(['/', '\\']).next().unwrap_or(word);
        match last.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() && ext.chars().all(char::is_alphanumeric) => {
                stem.to_owned()
            }
            _ => last.to_owned(),
        }
    };
    let program_stem = stem(program);
    let launched = if LAUNCHERS.contains(&program_stem.as_str()) {
        launched(&program_stem, args)
    } else {
        None
    };
    let name = match launched {
        // An npm package: drop the scope (`@scope/`) and the version (`@1.2.3`).
        Some(package) if package.starts_with('@') || !package.contains(['/', '\\']) => {
            let unscoped = package.rsplit('/').next().unwrap_or(package);
            let unversioned = match unscoped.find('@') {
                Some(at) if at > 0 => &unscoped[..at],
                _ => unscoped,
            };
            if package.starts_with('.') || unversioned.contains('.') {
                stem(unversioned)
            } else {
                unversioned.to_owned()
            }
        }
        Some(path) => script_name(path, stem),
        None => program_stem,
    };
    naming::server_prefix(&name)
}

/// Entry-point file names and build directories that say nothing about a server.
const GENERIC_PARTS: &[&str] = &[
    "index", "main", "cli", "server", "dist", "build", "lib", "bin", "src", "out", ".", "..",
];

/// The name of the script at `path`: its file name, unless that is generic (`index.js`),
/// then the nearest directory above it that is not a build directory (`pkg/dist/index.js`
/// → `pkg`).
fn script_name(path: &str, stem: impl Fn(&str) -> String) -> String {
    let file = stem(path);
    if !GENERIC_PARTS.contains(&file.as_str()) {
        return file;
    }
    path.rsplit(['/', '\\'])
        .skip(1)
        .find(|dir| !dir.is_empty() && !GENERIC_PARTS.contains(dir))
        .map_or(file, str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn quotes_and_escapes_group_words_like_a_shell() {
        assert_eq!(
            words("  npx -y  pkg ./docs "),
            ["npx", "-y", "pkg", "./docs"]
        );
        assert_eq!(
            words(r#"server --dir "My Documents" 'it''s' a\ b "q\"x\n""#),
            ["server", "--dir", "My Documents", "its", "a b", "q\"x\\n"]
        );
        assert_eq!(words(r#"run """#), ["run", ""]);
        assert!(split("echo 'open").unwrap_err().contains("single quote"));
        assert!(split("echo \"open").unwrap_err().contains("double quote"));
        assert!(split("echo \\").is_err());
        assert!(words("   ").is_empty());
    }

    #[test]
    fn names_come_from_the_launched_package_or_script() {
        let name = |line: &str| {
            let w = words(line);
            derive_name(&w[0], &w[1..])
        };
        assert_eq!(
            name("npx -y @modelcontextprotocol/server-filesystem ./docs"),
            "server-filesystem"
        );
        assert_eq!(name("npx -y @scope/pkg@1.2.3"), "pkg");
        assert_eq!(name("pnpm dlx some-server@latest"), "some-server");
        assert_eq!(name("uvx mcp-server-git --repo ."), "mcp-server-git");
        assert_eq!(name("node ./dist/index.js stdio"), "index");
        assert_eq!(
            name("node /m/node_modules/@x/server-everything/dist/index.js stdio"),
            "server-everything"
        );
        assert_eq!(name("python3 tools/weather.py"), "weather");
        assert_eq!(name("python -m mcp_server_time"), "mcp_server_time");
        assert_eq!(name("/usr/local/bin/my-server --flag"), "my-server");
        assert_eq!(name("npx"), "npx");
        // Neither a variable's value nor an option's is the image.
        assert_eq!(
            name("docker run -i --rm -e TOKEN=ghp_SECRET mcp/github"),
            "github"
        );
        assert_eq!(
            name("docker run -i --rm -e GITHUB_TOKEN ghcr.io/github/github-mcp-server"),
            "github-mcp-server"
        );
        assert_eq!(
            name("podman run --name fetcher -v /a:/b -i mcp/fetch"),
            "fetch"
        );
        // Every option that takes a value, before `run` or after it, and none that takes none.
        for line in [
            "docker run --pull always -i --rm mcp/github",
            "docker run -h host -m 512m --cap-add SYS_ADMIN --add-host a:1.2.3.4 -i mcp/github",
            "docker --context prod run -i mcp/github",
            "docker -H tcp://engine:2375 run -it mcp/github",
            "docker run -it --rm --network=host -eTOKEN=x --env-file f.env mcp/github",
            "podman run --creds user:SECRET --secret token -i mcp/github",
            // What follows the image is the server's own arguments.
            "docker run --rm -i mcp/github --toolsets repos --read-only",
            // A group of commands before `run`: the image, or compose's service, follows.
            "docker container run -i --rm mcp/github",
            "podman container run -i mcp/github",
            "docker compose run --rm -T github",
            "docker compose -f mcp.yml --project-name tools run -e TOKEN github",
        ] {
            assert_eq!(name(line), "github", "{line}");
        }
        // An image is named without its tag or digest, so an upgrade keeps the tool names.
        for line in [
            "docker run -i --rm mcp/github:1.2",
            "docker run -i --rm mcp/github@sha256:0123abcd",
            "podman run -i localhost:5000/team/github:latest",
        ] {
            assert_eq!(name(line), "github", "{line}");
        }
        assert_eq!(name("docker run -i alpine:3"), "alpine");
    }

    fn name(line: &str) -> String {
        let w = words(line);
        derive_name(&w[0], &w[1..])
    }

    /// Found by a review: an option whose name merely holds a secret's word skipped the
    /// word after it, so a flag (`npx --use-token-cache pkg`) took the package for its
    /// value and the server was named after a later word or its launcher.
    #[test]
    fn a_flag_about_a_secret_takes_no_value_and_a_secret_option_does() {
        for line in [
            "npx --use-token-cache pkg",
            "npx -y --token-cache pkg",
            "uvx --keyring-auth-cache pkg --db x",
            "npx --no-auth pkg",
        ] {
            assert_eq!(name(line), "pkg", "{line}");
        }
        for line in [
            "npx --token TOK3N pkg",
            "npx --api-key TOK3N pkg",
            "npx --apikey TOK3N pkg",
            "uvx --github_token TOK3N pkg",
            "npx --credentials TOK3N pkg",
            "npx --//registry.npmjs.org/:_authToken TOK3N pkg",
            "node --AUTH TOK3N pkg",
        ] {
            assert_eq!(name(line), "pkg", "{line}");
        }
    }

    /// Found by a review: a launcher's value-taking options were known for some of its
    /// sub-commands only: `uv run --no-group dev server.py` was named `dev`, `deno run -L
    /// debug server.ts` `debug`.
    #[test]
    fn options_of_every_sub_command_skip_their_value() {
        for (line, named) in [
            (
                "uv run --no-group dev --only-group mcp weather.py",
                "weather",
            ),
            ("uv run --no-extra gpu weather.py", "weather"),
            ("deno run -L debug --allow-net weather.ts", "weather"),
            ("python --check-hash-based-pycs never weather.py", "weather"),
            (
                "docker exec -i -e TOKEN -u app mcp-box node server.js",
                "mcp-box",
            ),
        ] {
            assert_eq!(name(line), named, "{line}");
        }
    }

    /// Found by a review: code given on the command line (`python -c CODE`) named the
    /// server, a name made of code that may hold a secret: the launcher names it instead.
    #[test]
    fn code_given_on_the_command_line_names_nothing() {
        for (line, named) in [
            ("python -c 'import srv; srv.run(\"TOK3N\")'", "python"),
            ("python3 -Bc TOK3N", "python3"),
            ("python -cTOK3N", "python"),
            ("python -u -c TOK3N server.py", "python"),
            ("node -e TOK3N", "node"),
            ("node --eval=TOK3N", "node"),
            ("node -p TOK3N x", "node"),
            ("bun --eval TOK3N", "bun"),
            ("deno eval TOK3N", "deno"),
            ("deno -q eval TOK3N", "deno"),
            // A module, a script, a value of `-X` or `-W`: named as before.
            ("python -m mcp_server_time", "mcp_server_time"),
            // Code options after the script or module are the server's own.
            ("python server.py -c config.toml", "server"),
            ("python weather.py -c config.toml", "weather"),
            ("node weather.js -e x", "weather"),
            ("python -m srv -c x", "srv"),
            ("python -X importtime weather.py", "weather"),
            ("python -Xpycache_prefix=/c weather.py", "weather"),
            ("deno run eval.ts", "eval"),
        ] {
            assert_eq!(name(line), named, "{line}");
        }
    }

    /// Found by a review: an unquoted Windows path lost every `\\` to shell escaping, so
    /// `C:\\Program Files\\x\\server.exe` ran `C:Program` and was named `C_Program`.
    #[test]
    fn unquoted_windows_paths_keep_their_backslashes() {
        assert_eq!(
            words(r"C:\Program Files\Acme MCP\server.exe --root D:\data\x"),
            [
                r"C:\Program Files\Acme MCP\server.exe",
                "--root",
                r"D:\data\x"
            ]
        );
        assert_eq!(
            words(r"  c:\tools\weather.CMD a"),
            [r"c:\tools\weather.CMD", "a"]
        );
        assert_eq!(
            words(r"node C:\servers\weather\index.js --dir=E:\My\ Files"),
            ["node", r"C:\servers\weather\index.js", r"--dir=E:\My Files"]
        );
        // A shell's escapes keep their meaning, in a Windows path too.
        assert_eq!(
            words(r"server C:\\x a\b 'C:\y' C:\ z"),
            ["server", r"C:\x", "ab", r"C:\y", "C: z"]
        );
        // No program's extension, or an option first: only the first word.
        assert_eq!(
            words(r"C:\bin\server --x y.exe"),
            [r"C:\bin\server", "--x", "y.exe"]
        );
        for (line, named) in [
            (
                r"C:\Program Files\Acme MCP\weather-server.exe --flag",
                "weather-server",
            ),
            (r"C:\tools\weather.bat", "weather"),
            (r"node C:\servers\weather\build\index.js", "weather"),
            (r"python D:\mcp\tools\weather.py", "weather"),
        ] {
            assert_eq!(name(line), named, "{line}");
        }
    }

    /// Found by a review: a line starting with a drive's path written for a shell, its
    /// `\` escaped (`C:\\tools\\x.exe`, the only way such a line worked before 4c11fcd, or
    /// `C:\Program\ Files\x.exe`), was taken as the program word for word, escapes and
    /// all (`C:\\tools\\x.exe`), where a shell, and the other words, read them.
    #[test]
    fn a_drive_path_escaped_for_a_shell_is_read_as_a_shell_reads_it() {
        assert_eq!(
            words(r"C:\\tools\\weather.exe --root D:\\data"),
            [r"C:\tools\weather.exe", "--root", r"D:\data"]
        );
        assert_eq!(
            words(r"C:\\Program Files\\x.exe"),
            [r"C:\Program", r"Files\x.exe"]
        );
        assert_eq!(
            words(r"C:\Program\ Files\Acme\server.exe -v"),
            [r"C:\Program Files\Acme\server.exe", "-v"]
        );
    }

    /// Left by a review: a Windows share's path (`\\host\share\x.exe`) was split as a shell
    /// splits it, the program `\hostsharex.exe`; one written for a shell keeps its reading.
    #[test]
    fn an_unquoted_share_path_keeps_its_backslashes() {
        assert_eq!(
            words(r"\\fs01\mcp tools\weather.exe --root D:\data"),
            [r"\\fs01\mcp tools\weather.exe", "--root", r"D:\data"]
        );
        assert_eq!(name(r"\\fs01\share\weather.CMD"), "weather");
        // Escaped for a shell, or no program's extension: read as a shell reads it.
        assert_eq!(
            words(r"\\\\fs01\\share\\weather.exe -v"),
            [r"\\fs01\share\weather.exe", "-v"]
        );
        assert_eq!(words(r"\\fs01\share\\x.exe"), [r"\fs01share\x.exe"]);
        assert_eq!(words(r"\\fs01\share\server"), [r"\fs01shareserver"]);
        assert_eq!(words(r"\\ x.exe"), [r"\", "x.exe"]);
        assert_eq!(words(r"\\$x\y.exe"), [r"\$xy.exe"]);
        // Only the program: an argument keeps a shell's reading (`\\d` is a regex's `\d`).
        assert_eq!(words(r"grep-mcp \\d\w.exe"), ["grep-mcp", r"\dw.exe"]);
    }

    /// Left by a review: one launcher's option was read as another's. `podman exec -l` is
    /// `--latest`, a flag, read as docker's `-l` taking a value (the word after it skipped);
    /// `docker compose exec --index N` was named `N`; `pnpm dlx -c` (shell mode, a flag
    /// whose command is a shell line) was read as npm's `-c` value, and `--shell-mode`
    /// named the server after the shell line, secrets and all.
    #[test]
    fn each_launchers_own_options_are_read_as_it_reads_them() {
        for (line, named) in [
            ("podman exec -l -i mcp-server --x", "mcp-server"),
            ("podman container exec -i -l mcp-server", "mcp-server"),
            ("podman run -l team=ai -i mcp/github", "github"),
            ("docker -l debug run -i mcp/github", "github"),
            ("docker compose exec --index 2 -T github", "github"),
            ("pnpm dlx -c 'server-x | tee log' more", "pnpm"),
            ("pnpm dlx --shell-mode 'server --token TOK3N'", "pnpm"),
            ("pnpm dlx -p a some-server", "some-server"),
            ("npm exec -c 'TOK3N' pkg", "pkg"),
        ] {
            assert_eq!(name(line), named, "{line}");
        }
    }

    /// Found by a review: 4c11fcd reads only an option whose name ends in a secret's word
    /// as taking a value, so npm's `--auth-type VALUE`, skipped before, named the server
    /// after its value (`npx --auth-type legacy pkg` was `legacy`).
    #[test]
    fn npms_auth_type_takes_its_value() {
        assert_eq!(name("npx --auth-type legacy pkg"), "pkg");
    }
}
