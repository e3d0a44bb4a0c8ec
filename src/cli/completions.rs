//! `pincat completions SHELL`: clap_complete's static script, plus a small
//! hook that completes known peer names (`pincat peers list --names`) where
//! a dialer's target goes: the first argument of send, get and pipe, and
//! the value of forward --to.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

/// The verbs whose first argument is a dialing target.
const TARGET_VERBS: [&str; 3] = ["send", "get", "pipe"];

/// The command that prints the known peers' names, one a line.
const NAMES: &str = "pincat peers list --names 2>/dev/null";

/// `pincat completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell (peer names: bash, zsh, fish).
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the completion script for `a.shell` on stdout.
pub fn run(mut cmd: clap::Command, a: &CompletionsArgs) -> pincat::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "pincat", &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    let script = match a.shell {
        Shell::Bash => format!("{script}\n{}", bash_hook(&cmd)),
        Shell::Zsh => zsh_hook(&script),
        Shell::Fish => fish_hook(&script),
        _ => script,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(script.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write the completion script to stdout")?;
    Ok(())
}

/// The options of `verb` that take a value, as a bash `case` pattern
/// (`--pin|-p|...`), so the hook can tell the target from their values.
fn valued_options(cmd: &clap::Command, verb: &str) -> String {
    let Some(sub) = cmd.find_subcommand(verb) else {
        return "--".into();
    };
    let mut pats = vec!["--".to_string()];
    for a in sub.get_arguments().filter(|a| !a.is_positional()) {
        let takes_value = a.get_num_args().is_some_and(|n| n.min_values() > 0);
        if !takes_value {
            continue;
        }
        pats.extend(a.get_long().map(|l| format!("--{l}")));
        pats.extend(a.get_short().map(|s| format!("-{s}")));
    }
    pats.join("|")
}

/// Bash: a wrapper around clap's `_pincat` that offers peer names for the
/// target, and clap's completions everywhere else.
fn bash_hook(cmd: &clap::Command) -> String {
    let cases: String = TARGET_VERBS
        .iter()
        .map(|v| format!("            {v}) valued='{}' ;;\n", valued_options(cmd, v)))
        .collect();
    format!(
        r#"# pincat: known peer names complete the target of send, get, pipe and forward --to.
_pincat_peer_names() {{
    {NAMES}
}}

_pincat_with_peers() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local verb="${{COMP_WORDS[1]}}" valued="" i w skip=0 seen=0
    if [[ $COMP_CWORD -ge 2 && $cur != -* ]]; then
        if [[ $verb == forward && $prev == --to ]]; then
            COMPREPLY=( $(compgen -W "$(_pincat_peer_names)" -- "$cur") )
            [[ ${{#COMPREPLY[@]}} -gt 0 ]] && return 0
        fi
        case "$verb" in
{cases}        esac
        if [[ -n $valued ]]; then
            for (( i = 2; i < COMP_CWORD; i++ )); do
                w="${{COMP_WORDS[i]}}"
                if (( skip )); then skip=0; continue; fi
                case "$w" in
                    --listen|-l|--exec) seen=1 ;;
                    -*) [[ "|$valued|" == *"|$w|"* ]] && skip=1 ;;
                    *) seen=1 ;;
                esac
            done
            if (( ! skip && ! seen )); then
                COMPREPLY=( $(compgen -W "$(_pincat_peer_names)" -- "$cur") )
                [[ ${{#COMPREPLY[@]}} -gt 0 ]] && return 0
            fi
        fi
    fi
    _pincat "$@"
}}

if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -F _pincat_with_peers -o nosort -o bashdefault -o default pincat
else
    complete -F _pincat_with_peers -o bashdefault -o default pincat
fi
"#
    )
}

/// Zsh: the targets (host-name hints in clap's script) complete peer
/// names as well as hosts.
fn zsh_hook(script: &str) -> String {
    let helper = format!(
        r#"# pincat: known peer names complete the target of send, get, pipe and forward --to.
(( $+functions[_pincat_targets] )) ||
_pincat_targets() {{
    local -a peers
    peers=(${{(f)"$({NAMES})"}})
    _alternative "peers:known peer:(${{peers[*]}})" 'hosts:host:_hosts'
}}

"#
    );
    let script = script.replace(":_hosts'", ":_pincat_targets'");
    match script.rfind("if [ \"$funcstack[1]\" = \"_pincat\" ]") {
        Some(at) => format!("{}{helper}{}", &script[..at], &script[at..]),
        None => format!("{script}\n{helper}"),
    }
}

/// Fish: peer names for the first argument of send, get and pipe, and for
/// forward --to.
fn fish_hook(script: &str) -> String {
    let names = format!("({NAMES})");
    let script = script.replace(
        "\"(__fish_print_hostnames)\"",
        &format!("\"{names} (__fish_print_hostnames)\""),
    );
    // send's later arguments are files; get and pipe take nothing else.
    format!(
        "{script}\n# pincat: known peer names complete the target of send, get, pipe and forward --to.\n\
         complete -c pincat -n \"__fish_pincat_using_subcommand send\" -a \"{names}\" -d 'known peer'\n\
         complete -c pincat -n \"__fish_pincat_using_subcommand get pipe\" -f -a \"{names}\" -d 'known peer'\n"
    )
}
