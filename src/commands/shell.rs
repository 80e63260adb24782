//! `dbctl completions SHELL` and `dbctl man`: the shell completion script and the man page,
//! generated from the same command-line definition the parser uses, so they never drift from it.
//! They read no settings and touch no database.

use std::io::Write as _;

/// Print a shell completion script on stdout.
///
/// Install it where your shell looks for completions, for example:
///   dbctl completions bash > ~/.local/share/bash-completion/completions/dbctl
///   dbctl completions zsh  > ~/.zfunc/_dbctl     (with `fpath+=~/.zfunc` before compinit)
///   dbctl completions fish > ~/.config/fish/completions/dbctl.fish
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Print the man page (roff) on stdout.
///
/// Install it with, for example:
///   dbctl man > ~/.local/share/man/man1/dbctl.1
///   man dbctl
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct ManArgs {}

pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = crate::cli::command();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "dbctl", &mut buf);
    write_stdout(&buf)
}

/// One page for the whole tool: the synopsis and options of `dbctl`, then a section per
/// subcommand with its own synopsis and options.
pub(crate) fn man() -> anyhow::Result<()> {
    let mut cmd = crate::cli::command();
    cmd.build();
    let mut buf = Vec::new();
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(&mut buf)?;
    page.render_name_section(&mut buf)?;
    page.render_synopsis_section(&mut buf)?;
    page.render_description_section(&mut buf)?;
    page.render_options_section(&mut buf)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        render_subcommand(&mut buf, sub, "dbctl")?;
    }
    page.render_extra_section(&mut buf)?;
    page.render_version_section(&mut buf)?;
    write_stdout(&buf)
}

/// A `.SH` section for `dbctl NAME`, and for each of its own subcommands in turn.
fn render_subcommand(buf: &mut Vec<u8>, sub: &clap::Command, parent: &str) -> anyhow::Result<()> {
    let full = format!("{parent} {}", sub.get_name());
    // The global options are described once, at the top of the page.
    let globals: Vec<clap::Id> = sub
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.get_id().clone())
        .collect();
    let mut own = sub
        .clone()
        .bin_name(full.clone())
        .display_name(full.clone());
    for id in globals {
        own = own.mut_arg(id, |a| a.hide(true));
    }
    let mut page = Vec::new();
    let man = clap_mangen::Man::new(own);
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    // Each section header names the command, so `man dbctl` can be searched for `dbctl seed`.
    let text = String::from_utf8_lossy(&page)
        .replace(".SH SYNOPSIS", &format!(".SH \"{}\"", full.to_uppercase()))
        .replace(".SH DESCRIPTION", ".SS Description")
        .replace(".SH OPTIONS", ".SS Options");
    buf.extend_from_slice(text.as_bytes());
    for child in sub.get_subcommands().filter(|s| s.get_name() != "help") {
        render_subcommand(buf, child, &full)?;
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
