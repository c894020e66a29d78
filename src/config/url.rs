//! The two URLs the runner is given, validated before anything uses them:
//! the repository's (which transport git may use, credentials split off so
//! they never reach a command line, `.git/config` or a log) and the
//! orchestrator's (plain `http://host:port[/prefix]`).

use crate::error::{Error, Result};
use std::fmt;

fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

/// How git reaches the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Ssh,
    Git,
    File,
}

/// A validated repository URL. `fetch_url` has no credentials; they are kept
/// apart so they never reach a command line, `.git/config` or a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    pub transport: Transport,
    pub fetch_url: String,
    /// What logs and the job's environment show: `fetch_url` as given.
    pub display: String,
    /// `scheme://host[:port]/` for scoping an HTTP authorization header.
    pub origin: String,
    /// Decoded user and password from an http(s) URL.
    pub credentials: Option<(String, String)>,
}

/// Validates a repository URL: no option look-alikes, no control
/// characters, and only transports fit for fetching (`ext::` and other
/// remote-helper transports can run commands, so they are refused).
pub fn parse_repo_url(url: &str) -> std::result::Result<Repo, String> {
    if url.is_empty() {
        return Err("is empty".into());
    }
    if url.starts_with('-') {
        return Err(format!(
            "{:?} starts with '-' and could be taken as an option; refused",
            shorten(url)
        ));
    }
    if url.chars().any(|c| c.is_control()) {
        return Err("contains a control character".into());
    }
    let scheme_end = url.find("://");
    let first_colon = url.find(':');
    if let Some(i) = url.find("::") {
        if scheme_end.is_none_or(|s| i < s) && !url[..i].contains('/') {
            return Err(format!(
                "the transport {:?} runs a remote helper command; only https, http, ssh, git, file, scp-style and local paths are accepted",
                &url[..i + 2]
            ));
        }
    }
    let mut origin = String::new();
    let mut credentials = None;
    let (transport, fetch_url) = if let Some(end) = scheme_end.filter(|&e| !url[..e].contains('/'))
    {
        let scheme = url[..end].to_ascii_lowercase();
        let transport = match scheme.as_str() {
            "https" | "http" => Transport::Http,
            "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
            "git" => Transport::Git,
            "file" => Transport::File,
            _ => {
                return Err(format!(
                    "the transport {scheme:?} is not supported; use https, http, ssh, git, file, scp-style (user@host:path) or a local path"
                ))
            }
        };
        let rest = &url[end + 3..];
        let auth_end = rest.find('/').unwrap_or(rest.len());
        let authority = &rest[..auth_end];
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        if transport != Transport::File && hostport.is_empty() {
            return Err("has no host".into());
        }
        if hostport.starts_with('-') {
            return Err("has a host starting with '-', which ssh could take as an option".into());
        }
        let scheme = &url[..end + 3];
        let mut fetch_url = scheme.to_string();
        match (userinfo, &transport) {
            (Some(ui), Transport::Http) => {
                let (user, pass) = ui.split_once(':').unwrap_or((ui, ""));
                credentials = Some((percent_decode(user), percent_decode(pass)));
            }
            (Some(ui), _) => {
                // An ssh user name is no secret, but a password never belongs in a URL.
                fetch_url.push_str(ui.split_once(':').map_or(ui, |(user, _)| user));
                fetch_url.push('@');
            }
            (None, _) => {}
        }
        fetch_url.push_str(hostport);
        fetch_url.push_str(&rest[auth_end..]);
        origin.push_str(scheme);
        origin.push_str(hostport);
        origin.push('/');
        (transport, fetch_url)
    } else if let Some(colon) = first_colon.filter(|&c| !url[..c].contains('/')) {
        // scp-style `[user@]host:path`: a colon before any slash.
        let host = &url[..colon];
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if host.is_empty() || host.starts_with('-') {
            return Err("has an empty host or one starting with '-'".into());
        }
        (Transport::Ssh, url.to_string())
    } else {
        // A local path, made absolute because git runs inside the workdir.
        let path = super::absolute_path(url)?;
        (Transport::File, path.to_string_lossy().into_owned())
    };
    Ok(Repo {
        transport,
        display: fetch_url.clone(),
        fetch_url,
        origin,
        credentials,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes credentials from every `scheme://user:pass@` in `text`, for
/// messages that quote URLs (git's errors do).
pub fn strip_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"');
        let authority = &tail[..end.unwrap_or(tail.len())];
        match authority.rfind('@') {
            Some(at) => rest = &tail[at + 1..],
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Where the orchestrator listens: `http://host:port/prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// A name or an address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// The path before `/v1/...`: empty or `/a/b`, without a trailing slash.
    pub prefix: String,
}

impl Endpoint {
    /// `http://host:port/prefix`, built once per uploader; the authority
    /// (`host:port`, IPv6 in brackets) is what lies between the scheme and
    /// the prefix.
    pub fn url(&self) -> String {
        let v6 = self.host.as_bytes().contains(&b':');
        let (l, r) = if v6 { ("[", "]") } else { ("", "") };
        format!(
            "http://{l}{}{r}:{}{}",
            self.host, self.port as u64, self.prefix
        )
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// Said without the URL, which may hold a password.
const USERINFO: &str = "SOLSTICE_ORCHESTRATOR_URL must not contain user information \
     (user@ or user:password@): the runner authenticates with SOLSTICE_JOB_TOKEN";

/// Parses `SOLSTICE_ORCHESTRATOR_URL`: `http://host[:port][/prefix]`, port 80
/// when absent.
pub fn parse_url(s: &str) -> Result<Endpoint> {
    split_url(s).map_err(|why| {
        Error::input(if why == USERINFO {
            why.to_string()
        } else {
            format!("SOLSTICE_ORCHESTRATOR_URL \"{s}\" {why}")
        })
    })
}

fn split_url(s: &str) -> std::result::Result<Endpoint, &'static str> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err("is not a URL: expected http://host:port[/prefix]");
    };
    let end = rest.bytes().position(|b| matches!(b, b'/' | b'?' | b'#'));
    let (authority, tail) = rest.split_at(end.unwrap_or(rest.len()));
    // Checked before anything echoes the URL.
    if authority.as_bytes().contains(&b'@') {
        return Err(USERINFO);
    }
    let scheme = scheme.as_bytes();
    if is_ci(scheme, b"https") {
        return Err(
            "uses https, which the runner does not speak: it talks plain HTTP to the \
             orchestrator on the host side of the VM network; use http://host:port",
        );
    }
    if !is_ci(scheme, b"http") {
        return Err("has a scheme other than http: expected http://host:port[/prefix]");
    }
    let (host, port, host_ok) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6
                .split_once(']')
                .ok_or("needs a ] after the IPv6 address")?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or("needs :port after the IPv6 address")?,
                ),
            };
            let ok = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
            (addr, port, addr.bytes().all(ok))
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_';
            (host, port, host.bytes().all(ok))
        }
    };
    if host.is_empty() || !host_ok {
        return Err("needs a host of letters, digits, '-', '_' and '.', or an IPv6 address in [ ]");
    }
    let port = match port {
        None => 80,
        Some(p) => match parse_num(p.as_bytes(), 10) {
            Some(n @ 1..=65535) => n as u16,
            _ => return Err("needs a port from 1 to 65535"),
        },
    };
    if !tail
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        return Err(
            "may only have a path of printable ASCII, without spaces, a query (?) or a \
             fragment (#)",
        );
    }
    Ok(Endpoint {
        host: host.to_string(),
        port,
        prefix: tail.trim_end_matches('/').to_string(),
    })
}

/// A decimal or hexadecimal number of digits only, without overflow.
pub fn parse_num(s: &[u8], radix: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        if u32::from(d) >= radix {
            return None;
        }
        n = n.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// Whether `s` is `lower` in any ASCII case (`lower` is lowercase).
pub fn is_ci(s: &[u8], lower: &[u8]) -> bool {
    s.len() == lower.len()
        && s.iter()
            .zip(lower)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        let ok = |u: &str| parse_repo_url(u).map(|r| r.transport);
        assert_eq!(ok("https://example.org/r.git"), Ok(Transport::Http));
        assert_eq!(ok("git@example.org:org/r.git"), Ok(Transport::Ssh));
        assert_eq!(ok("ssh://git@example.org/r"), Ok(Transport::Ssh));
        assert_eq!(ok("git://127.0.0.1/r"), Ok(Transport::Git));
        assert_eq!(ok("file:///srv/r.git"), Ok(Transport::File));
        assert_eq!(ok("/srv/r.git"), Ok(Transport::File));
        for bad in [
            "ext::sh -c touch% /tmp/x",
            "fd::3",
            "-oProxyCommand=x",
            "--upload-pack=x",
        ] {
            assert!(parse_repo_url(bad).is_err(), "{bad}");
        }
        assert!(parse_repo_url("ftp://x/y").is_err());
        assert!(parse_repo_url("https://x/\ny").is_err());
        assert!(parse_repo_url("ssh://-oProxyCommand=x/y").is_err());
    }

    #[test]
    fn credentials_are_split_off() {
        let r = parse_repo_url("https://user:p%40ss@host:8080/r.git").unwrap();
        assert_eq!(r.fetch_url, "https://host:8080/r.git");
        assert_eq!(r.origin, "https://host:8080/");
        assert_eq!(r.credentials, Some(("user".into(), "p@ss".into())));
        assert_eq!(
            strip_credentials("fatal: 'https://u:p@h/x' failed"),
            "fatal: 'https://h/x' failed"
        );
    }
}
