//! The Dockerfile subset godel builds templates from, parsed into steps
//! (each with its line): `FROM`, `RUN`, `COPY`, `ADD` (local files),
//! `ENV`, `WORKDIR`, `USER root`, `ARG`, `CMD`/`ENTRYPOINT` (the template's
//! start command). Anything else is refused naming the instruction and its
//! line; so are the forms godel cannot honour (registry images, URLs,
//! `--flags`, several stages, archives for `ADD`, wildcards).

use std::collections::BTreeMap;

use godel_core::{Error, Result};

/// Where a build starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The host's system directories (what every sandbox sees).
    Host,
    /// A template built before (of the same team).
    Template(String),
}

/// One instruction, its `ARG`s substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instr {
    From(Base),
    /// argv (shell form: `/bin/sh -c <line>`).
    Run(Vec<String>),
    Copy {
        sources: Vec<String>,
        dest: String,
    },
    Env(Vec<(String, String)>),
    Workdir(String),
    Arg(String, Option<String>),
    /// `CMD`/`ENTRYPOINT`: the start command.
    Start(Vec<String>),
}

/// A parsed step: line number, text as written, instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub text: String,
    pub instr: Instr,
}

fn refuse(line: usize, text: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Dockerfile line {line} ({text}): {why}"))
}

/// Logical lines (continuations joined, comments and blank lines dropped),
/// each with the number of its first physical line.
fn logical_lines(src: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, raw) in src.lines().enumerate() {
        let t = raw.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if !cur.is_empty() && t.starts_with('#') {
            continue;
        }
        if cur.is_empty() {
            start = i + 1;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            out.push((start, std::mem::take(&mut cur)));
        }
    }
    if !cur.trim().is_empty() {
        out.push((start, cur.trim().to_string()));
    }
    out
}

/// `$NAME` and `${NAME}` from `vars`; unknown names become empty.
pub fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'$') {
            out.push('$');
            chars.next();
            continue;
        }
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut name = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            if name.is_empty() {
                out.push('$');
                continue;
            }
        }
        out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
    }
    out
}

/// A JSON array of strings (the exec form), if `rest` is one.
fn exec_form(rest: &str) -> Option<Vec<String>> {
    rest.trim_start()
        .starts_with('[')
        .then(|| serde_json::from_str::<Vec<String>>(rest).ok())
        .flatten()
}

fn split_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// `ENV K=V K2="V 2"` or `ENV K V`.
fn parse_env(rest: &str) -> Option<Vec<(String, String)>> {
    let first = rest.split_whitespace().next()?;
    if !first.contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace)?;
        return Some(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut val = String::new();
        let quote = match chars.peek() {
            Some('"') | Some('\'') => chars.next(),
            _ => None,
        };
        while let Some(c) = chars.next() {
            match quote {
                Some(q) if c == q => break,
                Some(_) if c == '\\' => {
                    if let Some(n) = chars.next() {
                        val.push(n);
                    }
                }
                None if c.is_whitespace() => break,
                _ => val.push(c),
            }
        }
        if key.is_empty() || key.contains(char::is_whitespace) {
            return None;
        }
        out.push((key, val));
    }
    Some(out)
}

/// Parse a Dockerfile (ARG defaults and ENV values substituted where Docker does).
pub fn parse(src: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_from = false;
    for (line, text) in logical_lines(src) {
        let (word, rest) = match text.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (text.as_str(), ""),
        };
        let upper = word.to_ascii_uppercase();
        let short: String = text.chars().take(80).collect();
        let vars: BTreeMap<String, String> = args
            .iter()
            .chain(env.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if upper != "ARG" && upper != "FROM" && !seen_from {
            return Err(refuse(line, &short, "the first instruction must be FROM"));
        }
        if rest.starts_with("--") && upper != "RUN" {
            let flag = rest.split_whitespace().next().unwrap_or(rest);
            return Err(refuse(
                line,
                &short,
                format!("{upper} {flag} is not supported by godel's template builder"),
            ));
        }
        let instr = match upper.as_str() {
            "FROM" => {
                if seen_from {
                    return Err(refuse(
                        line,
                        &short,
                        "several FROM (multi-stage builds) are not supported",
                    ));
                }
                seen_from = true;
                let words = split_words(&substitute(rest, &args));
                if words.len() != 1 {
                    return Err(refuse(
                        line,
                        &short,
                        "FROM takes one base (stage names with AS are not supported)",
                    ));
                }
                Instr::From(parse_base(&words[0]).map_err(|e| refuse(line, &short, e))?)
            }
            "RUN" => {
                if rest.starts_with("--") {
                    let flag = rest.split_whitespace().next().unwrap_or(rest);
                    return Err(refuse(
                        line,
                        &short,
                        format!("RUN {flag} is not supported by godel's template builder"),
                    ));
                }
                match exec_form(rest) {
                    Some(argv) if !argv.is_empty() => Instr::Run(argv),
                    Some(_) => return Err(refuse(line, &short, "RUN needs a command")),
                    None if rest.is_empty() => {
                        return Err(refuse(line, &short, "RUN needs a command"));
                    }
                    None => Instr::Run(vec!["/bin/sh".into(), "-c".into(), rest.to_string()]),
                }
            }
            "COPY" | "ADD" => {
                let words = match exec_form(rest) {
                    Some(w) => w,
                    None => split_words(&substitute(rest, &vars)),
                };
                if words.len() < 2 {
                    return Err(refuse(
                        line,
                        &short,
                        format!("{upper} needs a source and a destination"),
                    ));
                }
                let (dest, sources) = words.split_last().expect("two words");
                for s in sources {
                    if s.contains("://") || s.starts_with("git@") {
                        return Err(refuse(
                            line,
                            &short,
                            format!(
                                "{upper} from a URL ({s}) is not supported: godel fetches nothing; put the file in the build context"
                            ),
                        ));
                    }
                    if s.contains(['*', '?', '[']) {
                        return Err(refuse(
                            line,
                            &short,
                            format!("wildcards in {upper} sources ({s}) are not supported"),
                        ));
                    }
                    let archive = [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".txz"];
                    if upper == "ADD" && archive.iter().any(|a| s.ends_with(a)) {
                        return Err(refuse(
                            line,
                            &short,
                            format!(
                                "ADD of an archive ({s}) would unpack it, which godel does not do: COPY it and unpack it in a RUN"
                            ),
                        ));
                    }
                }
                Instr::Copy {
                    sources: sources.to_vec(),
                    dest: dest.clone(),
                }
            }
            "ENV" => {
                let pairs = parse_env(&substitute(rest, &vars))
                    .ok_or_else(|| refuse(line, &short, "ENV needs NAME=value"))?;
                for (k, v) in &pairs {
                    env.insert(k.clone(), v.clone());
                }
                Instr::Env(pairs)
            }
            "WORKDIR" => {
                let dir = substitute(rest, &vars);
                if dir.is_empty() {
                    return Err(refuse(line, &short, "WORKDIR needs a directory"));
                }
                Instr::Workdir(dir)
            }
            "ARG" => {
                let (k, v) = match rest.split_once('=') {
                    Some((k, v)) => (
                        k.trim().to_string(),
                        Some(v.trim().trim_matches('"').to_string()),
                    ),
                    None => (rest.to_string(), None),
                };
                if k.is_empty() || k.contains(char::is_whitespace) {
                    return Err(refuse(line, &short, "ARG needs one NAME[=default]"));
                }
                args.insert(k.clone(), v.clone().unwrap_or_default());
                Instr::Arg(k, v)
            }
            "USER" => {
                let u = substitute(rest, &vars);
                if u == "root" || u == "0" || u == "root:root" || u == "0:0" {
                    // RUN steps already run as root.
                    Instr::Env(Vec::new())
                } else {
                    return Err(refuse(
                        line,
                        &short,
                        format!(
                            "USER {u} is not supported: RUN steps run as root and sandboxes run commands as `user` (uid 1000); only USER root is accepted"
                        ),
                    ));
                }
            }
            "CMD" | "ENTRYPOINT" => {
                let argv = match exec_form(rest) {
                    Some(a) => a,
                    None => vec!["/bin/sh".into(), "-c".into(), rest.to_string()],
                };
                if argv.is_empty() || rest.is_empty() {
                    return Err(refuse(line, &short, format!("{upper} needs a command")));
                }
                Instr::Start(argv)
            }
            _ => {
                return Err(refuse(
                    line,
                    &short,
                    format!(
                        "instruction {upper} is not supported (godel builds FROM, RUN, COPY, ADD, ENV, WORKDIR, USER root, ARG, CMD, ENTRYPOINT)"
                    ),
                ));
            }
        };
        steps.push(Step { line, text, instr });
    }
    if !seen_from {
        return Err(Error::invalid("Dockerfile has no FROM"));
    }
    Ok(steps)
}

/// `FROM` forms godel accepts: `host`, `scratch` (the same: a template's
/// root always has the host's system directories underneath), or a
/// template's name; a registry image is refused.
pub fn parse_base(s: &str) -> std::result::Result<Base, String> {
    if s == "host" || s == "scratch" {
        return Ok(Base::Host);
    }
    if let Some(rest) = s.strip_prefix("oci:") {
        return Err(format!(
            "FROM oci:{rest}: OCI layouts are not supported yet by the template builder; use FROM host or FROM <template>"
        ));
    }
    if s.contains(['/', ':', '@']) {
        return Err(format!(
            "FROM {s}: godel pulls no registry images; use FROM host (the host's system directories) or FROM <name of a template you built>"
        ));
    }
    Ok(Base::Template(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_subset_with_lines_continuations_and_args() {
        let src = "# comment\nARG V=1\nFROM host\n\nRUN echo $V \\\n  && true\nENV A=b C=\"d e\"\nENV X y z\nWORKDIR /opt/$A\nCOPY a.txt dir/ /opt/\nRUN [\"touch\", \"/x\"]\nUSER root\nCMD [\"sleep\", \"1\"]\n";
        let steps = parse(src).unwrap();
        let lines: Vec<usize> = steps.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![2, 3, 5, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!(steps[1].instr, Instr::From(Base::Host));
        assert_eq!(
            steps[2].instr,
            Instr::Run(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $V  && true".into()
            ])
        );
        assert_eq!(
            steps[3].instr,
            Instr::Env(vec![("A".into(), "b".into()), ("C".into(), "d e".into())])
        );
        assert_eq!(steps[4].instr, Instr::Env(vec![("X".into(), "y z".into())]));
        assert_eq!(steps[5].instr, Instr::Workdir("/opt/b".into()));
        assert_eq!(
            steps[6].instr,
            Instr::Copy {
                sources: vec!["a.txt".into(), "dir/".into()],
                dest: "/opt/".into()
            }
        );
        assert_eq!(
            steps[7].instr,
            Instr::Run(vec!["touch".into(), "/x".into()])
        );
        assert_eq!(
            steps[9].instr,
            Instr::Start(vec!["sleep".into(), "1".into()])
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour_naming_line_and_instruction() {
        let cases = [
            ("FROM host\nEXPOSE 80\n", "line 2", "EXPOSE"),
            ("FROM ubuntu:22.04\n", "line 1", "pulls no registry images"),
            ("FROM docker.io/library/debian\n", "line 1", "FROM host"),
            ("FROM host\nADD https://x/y /y\n", "line 2", "URL"),
            ("FROM host\nCOPY --chown=1 a /a\n", "line 2", "--chown"),
            ("FROM host\nUSER user\n", "line 2", "USER user"),
            ("FROM host\nFROM host\n", "line 2", "multi-stage"),
            ("RUN true\n", "line 1", "first instruction must be FROM"),
            ("FROM host\nCOPY *.txt /x/\n", "line 2", "wildcards"),
            ("FROM host\nADD a.tar.gz /x/\n", "line 2", "archive"),
            ("FROM oci:/l:tag\n", "line 1", "OCI"),
        ];
        for (src, line, what) in cases {
            let e = parse(src).unwrap_err();
            assert_eq!(e.code, godel_core::ErrorCode::InvalidArgument);
            assert!(
                e.message.contains(line) && e.message.contains(what),
                "{src}: {e}"
            );
        }
        assert!(parse("").unwrap_err().message.contains("no FROM"));
    }

    #[test]
    fn substitution() {
        let vars: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(substitute("x$A ${A}y $B \\$A $", &vars), "x1 1y  $A $");
    }
}
