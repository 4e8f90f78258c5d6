//! `shifter watch [--interval 1s] [--window 10s] [--once]`: the live terminal view. The
//! screen itself is drawn by [`view::render`] from a view model of the typed status.

pub mod view;

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{Failure, VerbResult, fail};
use crate::{
    api::{
        client::{Client, ClientError},
        types::Status,
    },
    util::{format_time_ms, now_unix_ms},
};
use view::{Tracker, ViewModel, render, render_text};

/// Watch every service live: the blue/green split of new connections, weights, flows,
/// health, rollouts and the last events. Keys: q, Esc or Ctrl-C quit.
///
/// Examples: `shifter watch`, `shifter watch --window 30s`, `shifter watch --once`
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How far back the split of new connections looks.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Print one screen as plain text (from two samples `--interval` apart) and exit; needs
    /// no terminal.
    #[arg(long)]
    once: bool,
    /// Width of the --once screen.
    #[arg(long, default_value_t = 80, requires = "once")]
    width: u16,
    /// Height of the --once screen.
    #[arg(long, default_value_t = 24, requires = "once")]
    height: u16,
}

/// Events kept for the screen.
const EVENTS_KEPT: usize = 20;
const EVENTS_SHOWN: usize = 6;

/// Polls the daemon and keeps what the screen needs.
struct Sampler<'a> {
    client: &'a Client,
    rt: tokio::runtime::Runtime,
    start: Instant,
    tracker: Tracker,
    snap: Status,
    events: Vec<crate::events::Event>,
    next_event: u64,
    clock: String,
}

impl<'a> Sampler<'a> {
    fn new(client: &'a Client, window: Duration) -> Self {
        Self {
            client,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            start: Instant::now(),
            tracker: Tracker::new(window),
            snap: Status::default(),
            events: Vec::new(),
            next_event: 0,
            clock: String::new(),
        }
    }

    fn sample(&mut self) -> Result<(), ClientError> {
        let client = self.client;
        let since = self.next_event;
        let (status, events) = self.rt.block_on(async {
            let status = client.status().await?;
            let events = client.events(since).await?;
            Ok::<_, ClientError>((status, events))
        })?;
        self.tracker.push(self.start.elapsed(), &status);
        self.snap = status;
        for ev in events.events {
            self.next_event = self.next_event.max(ev.seq + 1);
            self.events.push(ev);
        }
        let skip = self.events.len().saturating_sub(EVENTS_KEPT);
        self.events.drain(..skip);
        let now = format_time_ms(now_unix_ms());
        self.clock = format!("{} UTC", now.get(11..19).unwrap_or(&now));
        Ok(())
    }

    fn view(&self, error: Option<String>) -> ViewModel {
        let mut vm = ViewModel::build(
            &self.client.socket().display().to_string(),
            &self.clock,
            &self.snap,
            &self.tracker,
            &self.events,
            EVENTS_SHOWN,
        );
        vm.error = error;
        vm
    }
}

/// Whether a key ends the view: q, Esc, Ctrl-C (raw mode delivers it as a key).
pub(crate) fn quits(k: &KeyEvent) -> bool {
    k.kind != KeyEventKind::Release
        && match k.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c' | 'd') => k.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

pub(crate) fn run(client: &Client, a: Args) -> VerbResult {
    if a.interval < Duration::from_millis(100) {
        return Err(Failure::Message(
            format!(
                "--interval {} is too short (at least 100ms)",
                humantime::format_duration(a.interval)
            ),
            super::EXIT_USAGE,
        ));
    }
    let mut s = Sampler::new(client, a.window);
    // The first sample outside the terminal: "not running" is said plainly.
    s.sample()?;
    if a.once {
        std::thread::sleep(a.interval);
        s.sample()?;
        for line in render_text(&s.view(None), a.width, a.height) {
            println!("{line}");
        }
        return Ok(());
    }
    if !std::io::stdout().is_terminal() {
        return Err(fail(
            "shifter watch needs a terminal (use `shifter watch --once` or `shifter status`)",
        ));
    }
    let mut term = ratatui::try_init().map_err(|e| fail(format!("terminal: {e}")))?;
    let res = run_loop(&mut term, &mut s, a.interval);
    ratatui::restore();
    res
}

fn run_loop(
    term: &mut ratatui::DefaultTerminal,
    s: &mut Sampler,
    interval: Duration,
) -> VerbResult {
    let mut error = None;
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        let mut redraw = false;
        if now >= next {
            error = s.sample().err().map(|e| format!("last sample failed: {e}"));
            next = now + interval;
            redraw = true;
        }
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait).map_err(|e| fail(format!("terminal: {e}")))? {
            match event::read().map_err(|e| fail(format!("terminal: {e}")))? {
                Event::Key(k) if quits(&k) => return Ok(()),
                Event::Resize(..) => redraw = true,
                _ => {}
            }
        }
        if redraw {
            let vm = s.view(error.clone());
            term.draw(|f| render(f, &vm))
                .map_err(|e| fail(format!("terminal: {e}")))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quit_keys() {
        let key = |c, m| KeyEvent::new(c, m);
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
    }
}
