//! Terminal handling: raw mode on stdin (restored on drop) and the window size.

use std::io;
use std::sync::Mutex;

use rustix::termios::{self, OptionalActions, Termios};

/// Whether stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    termios::isatty(io::stdin())
}

/// Whether stdout is a terminal.
pub fn stdout_is_tty() -> bool {
    termios::isatty(io::stdout())
}

/// The terminal size of stdout as (rows, columns).
pub fn size() -> Option<(u16, u16)> {
    termios::tcgetwinsize(io::stdout())
        .or_else(|_| termios::tcgetwinsize(io::stdin()))
        .ok()
        .filter(|w| w.ws_row > 0 && w.ws_col > 0)
        .map(|w| (w.ws_row, w.ws_col))
}

/// The settings to put back if we die while in raw mode (release builds abort on panic, skipping drops).
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Restores the terminal if raw mode is on (for the panic hook).
pub fn restore_saved() {
    if let Ok(mut g) = SAVED.lock()
        && let Some(t) = g.take()
    {
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &t);
    }
}

/// Puts stdin in raw mode until dropped.
#[derive(Debug)]
pub struct RawGuard {
    orig: Termios,
}

impl RawGuard {
    /// Switches stdin to raw mode (cfmakeraw, as moby/term does).
    pub fn enable() -> io::Result<RawGuard> {
        let stdin = io::stdin();
        let orig = termios::tcgetattr(&stdin)?;
        let mut raw = orig.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        if let Ok(mut g) = SAVED.lock() {
            *g = Some(orig.clone());
        }
        Ok(RawGuard { orig })
    }
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        if let Ok(mut g) = SAVED.lock() {
            *g = None;
        }
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &self.orig);
    }
}

/// Shows `prompt` and reads one line from stdin with echo off when stdin is a terminal (a password).
/// Echo goes off before the prompt shows, so nothing typed after it is echoed.
pub fn read_line_noecho(prompt: &str) -> io::Result<String> {
    use std::io::BufRead as _;
    use std::io::Write as _;
    let stdin = io::stdin();
    let saved = if stdin_is_tty() {
        let orig = termios::tcgetattr(&stdin)?;
        let mut quiet = orig.clone();
        quiet.local_modes.remove(termios::LocalModes::ECHO);
        termios::tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
        Some(orig)
    } else {
        None
    };
    print!("{prompt}");
    let _ = io::stdout().flush();
    let mut line = String::new();
    let res = stdin.lock().read_line(&mut line);
    if let Some(orig) = saved {
        let _ = termios::tcsetattr(&stdin, OptionalActions::Now, &orig);
        println!();
    }
    res?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
