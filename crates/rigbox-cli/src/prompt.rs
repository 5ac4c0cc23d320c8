//! Reading from the user: the no-echo key prompt, the first line of stdin, and the `[y/N]`
//! confirmation of destructive commands (cli.md §5). The blocking reads run on tokio's blocking
//! pool so that Ctrl-C still ends the process with exit code 130 while they wait.

use crate::error::{CliError, CliResult};
use std::io::IsTerminal;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> CliResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError::usage(format!("reading input failed: {e}")))?
        .map_err(|e| CliError::io("reading input failed", &e))
}

/// Asks for a secret on the terminal without echo.
pub async fn secret(prompt: &'static str) -> CliResult<String> {
    blocking(move || rpassword::prompt_password(prompt)).await
}

/// The first line of stdin, trimmed.
pub async fn stdin_line() -> CliResult<String> {
    let line = blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok(line)
    })
    .await?;
    Ok(line.trim().to_owned())
}

/// Whether a question can be asked: stdin and stderr are terminals.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks `question [y/N]` on a terminal unless `yes`; without a terminal `--yes` is required.
pub async fn confirm(question: String, yes: bool) -> CliResult<()> {
    if yes {
        return Ok(());
    }
    if !interactive() {
        return Err(CliError::usage(
            "refusing to delete without confirmation: no terminal to ask on; pass --yes",
        ));
    }
    eprint!("{question} [y/N] ");
    let answer = stdin_line().await?;
    if is_yes(&answer) {
        Ok(())
    } else {
        Err(CliError::new("aborted", "Aborted; nothing was deleted.", 1))
    }
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        assert!(is_yes("y"));
        assert!(is_yes(" Yes\n"));
        assert!(!is_yes(""));
        assert!(!is_yes("n"));
        assert!(!is_yes("yep"));
    }

    #[tokio::test]
    async fn yes_skips_the_question() {
        confirm("Delete?".into(), true).await.expect("no question");
    }
}
