//! How the `sealcast` command reports a failure: once, on stderr, without a backtrace
//! (whatever `RUST_BACKTRACE` says), and with each cause only when it adds something.

use std::fmt::Write;

/// The text printed for an error: `error: ...`, then the causes that are not already
/// part of the message before them (a `#[from]` source is often repeated in its wrapper's
/// message).
pub(crate) fn render(e: &anyhow::Error) -> String {
    let mut out = format!("error: {e}");
    let mut previous = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if previous.contains(&text) {
            continue;
        }
        let text_indented = text
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n    ");
        let text_indented = text_indented.trim_end();
        let _ = write!(out, "\n  caused by: {text_indented}");
        previous = text;
    }
    out
}

/// Prints the error and gives the exit code for it.
pub(crate) fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("{}", render(e));
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Wrapper {
        #[error("config: {0}")]
        Parse(#[from] std::fmt::Error),
    }

    #[test]
    fn a_cause_repeated_in_its_wrapper_is_printed_once() {
        let e = anyhow::Error::new(Wrapper::from(std::fmt::Error)).context("refusing to start");
        let text = render(&e);
        assert_eq!(
            text,
            "error: refusing to start\n  caused by: config: an error occurred when formatting an argument"
        );
        assert_eq!(text.matches("formatting").count(), 1);
    }

    #[test]
    fn multi_line_causes_stay_indented() {
        let e = anyhow::anyhow!("line one\nline two").context("top");
        assert_eq!(
            render(&e),
            "error: top\n  caused by: line one\n    line two"
        );
    }
}
