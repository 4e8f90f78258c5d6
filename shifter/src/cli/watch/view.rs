//! `shifter watch`: the view model and its rendering, kept free of I/O so it can be tested
//! on ratatui's `TestBackend` (see tests/tests/watch.rs). It reads the typed status and
//! events of [`crate::api::types`]. The terminal loop is in `cli/watch/mod.rs`.
//!
//! Per service the screen shows a bar of the blue/green split of the NEW connections seen
//! over the last seconds (deltas of the `new_flows` counters between status samples), the
//! configured weight beside it, active flows per version, and, when the daemon reports them,
//! the health of each backend and the rollout step with its time left, and on a fleet host
//! the agent's view of etcd and each service's fleet rollout (phase, wave, hosts done). The
//! last events close the screen. Everything fits 80x24; longer lines are clipped.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use crate::{
    api::types::{BackendHealthView, FleetAgentView, RolloutView, ServiceFleetView, Status, label},
    events::Event,
    model::percent as format_percent,
    util::{format_time_ms, now_unix_ms},
};
use ratatui::{
    Frame,
    buffer::Buffer,
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph},
};

/// Status samples over a sliding window, to turn counters into recent rates.
pub struct Tracker {
    window: Duration,
    /// (time of the sample, service -> new_flows [blue, green]), oldest first.
    samples: VecDeque<(Duration, BTreeMap<String, [u64; 2]>)>,
}

impl Tracker {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            samples: VecDeque::new(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Adds a sample taken at `at` (any monotonic origin). Keeps one sample at or before
    /// the window's start as the baseline.
    pub fn push(&mut self, at: Duration, snap: &Status) {
        let counts = snap
            .services
            .iter()
            .map(|s| (s.name.clone(), [s.blue.new_flows, s.green.new_flows]))
            .collect();
        self.samples.push_back((at, counts));
        let start = at.saturating_sub(self.window);
        while self.samples.len() > 2 && self.samples[1].0 <= start {
            self.samples.pop_front();
        }
    }

    /// New connections per backend between the oldest kept sample and the newest one, and
    /// the time between them; `None` before two samples of the service exist.
    pub fn recent(&self, service: &str) -> Option<([u64; 2], Duration)> {
        let (t1, last) = self.samples.back()?;
        let now = last.get(service)?;
        let (t0, first) = self
            .samples
            .iter()
            .take(self.samples.len() - 1)
            .find(|(_, m)| m.contains_key(service))?;
        let then = first.get(service)?;
        Some((
            [
                now[0].saturating_sub(then[0]),
                now[1].saturating_sub(then[1]),
            ],
            t1.saturating_sub(*t0),
        ))
    }
}

/// Everything the screen shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewModel {
    /// Where the data comes from (the socket path).
    pub source: String,
    /// Wall-clock time of the last sample, as shown.
    pub clock: String,
    pub services: Vec<ServiceView>,
    /// The last events, oldest first, formatted.
    pub events: Vec<String>,
    /// Why the last sample failed (the screen keeps the previous data).
    pub error: Option<String>,
    /// This host's fleet agent (`[fleet]` configured).
    pub fleet: Option<FleetAgentView>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceView {
    pub name: String,
    pub protocol: String,
    pub port: u16,
    /// "socket" or "rewrite" (`ServiceStatus::dispatch`).
    pub dispatch: String,
    /// Green's configured share, basis points.
    pub weight_bp: u16,
    /// New connections [blue, green] over `span`; `None` until there are two samples.
    pub recent: Option<([u64; 2], Duration)>,
    pub active: [u64; 2],
    pub health: [Option<BackendHealthView>; 2],
    pub rollout: Option<RolloutView>,
    /// The service's fleet rollout, as this host's agent last read it.
    pub fleet: Option<ServiceFleetView>,
}

impl ViewModel {
    /// The view of `snap` with rates from `tracker` and the newest `max_events` of `events`
    /// (`/v1/events` entries).
    pub fn build(
        source: &str,
        clock: &str,
        snap: &Status,
        tracker: &Tracker,
        events: &[Event],
        max_events: usize,
    ) -> Self {
        let services = snap
            .services
            .iter()
            .map(|s| ServiceView {
                name: s.name.clone(),
                protocol: s.protocol.clone(),
                port: s.port,
                dispatch: s.dispatch.clone(),
                weight_bp: s.weight_bp,
                recent: tracker.recent(&s.name),
                active: [s.blue.active_flows, s.green.active_flows],
                health: [
                    s.health.as_ref().map(|h| h.blue.clone()),
                    s.health.as_ref().map(|h| h.green.clone()),
                ],
                rollout: s.rollout.clone(),
                fleet: s.fleet.clone(),
            })
            .collect();
        let skip = events.len().saturating_sub(max_events);
        Self {
            source: source.to_owned(),
            clock: clock.to_owned(),
            services,
            events: events[skip..].iter().map(event_line).collect(),
            error: None,
            fleet: snap.fleet.clone(),
        }
    }
}

/// `04:48:02 web 0.00% -> 25.00% operator uid 0` (UTC time of day).
pub fn event_line(ev: &Event) -> String {
    let t = format_time_ms(ev.time_ms);
    let time = t.get(11..19).unwrap_or(&t);
    let w = |bp: Option<u16>| {
        bp.map_or_else(|| "-".to_owned(), |bp| format!("{}%", format_percent(bp)))
    };
    let mut line = format!(
        "{time} {} {} -> {} {}",
        ev.service,
        w(ev.old_weight_bp),
        w(ev.new_weight_bp),
        ev.cause
    );
    if let Some(uid) = ev.uid {
        line.push_str(&format!(" uid {uid}"));
    }
    if let Some(fleet) = &ev.fleet_rollout {
        line.push_str(&format!(" fleet {fleet}"));
    }
    line
}

const BLUE: Color = Color::Blue;
const GREEN: Color = Color::Green;
const BLUE_CELL: &str = "█";
const GREEN_CELL: &str = "▒";
const EMPTY_CELL: &str = "·";

fn dim() -> Style {
    Style::new().add_modifier(Modifier::DIM)
}

/// Percent with one decimal of `part` in `total`.
fn share(part: u64, total: u64) -> String {
    if total == 0 {
        return "-".into();
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "a percent shown with no decimals"
    )]
    let p = part as f64 * 100.0 / total as f64;
    format!("{p:.0}%")
}

/// The split bar: blue cells then green cells, `width` in all.
fn bar(recent: Option<([u64; 2], Duration)>, width: usize) -> Vec<Span<'static>> {
    let Some(([b, g], _)) = recent.filter(|([b, g], _)| b + g > 0) else {
        return vec![Span::styled(EMPTY_CELL.repeat(width), dim())];
    };
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a share of a bar at most 60 cells wide, rounded to cells"
    )]
    let blue = ((b as f64 / (b + g) as f64) * width as f64).round() as usize;
    let blue = blue.min(width);
    vec![
        Span::styled(BLUE_CELL.repeat(blue), Style::new().fg(BLUE)),
        Span::styled(GREEN_CELL.repeat(width - blue), Style::new().fg(GREEN)),
    ]
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64().round())
}

fn health_span(h: Option<&BackendHealthView>) -> Vec<Span<'static>> {
    let Some(h) = h else {
        return vec![Span::styled("n/a", dim())];
    };
    let state = label(&h.status);
    let color = match state.as_str() {
        "up" => Color::Green,
        "down" => Color::Red,
        _ => Color::Yellow,
    };
    let mut v = vec![Span::styled(
        state.clone(),
        Style::new().fg(color).add_modifier(Modifier::BOLD),
    )];
    if state != "up"
        && let Some(f) = &h.last_failure
    {
        v.push(Span::raw(format!(" ({f})")));
    }
    v
}

/// The lines of one service.
fn service_lines(s: &ServiceView, width: u16) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let [ab, ag] = s.active;
    out.push(Line::from(vec![
        Span::styled(
            format!("{} ", s.name),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::styled(format!("{}/{} {}", s.protocol, s.port, s.dispatch), dim()),
        Span::raw("  weight "),
        Span::styled(
            format!("{}%", format_percent(s.weight_bp)),
            Style::new().fg(GREEN).add_modifier(Modifier::BOLD),
        ),
        Span::raw(" green  flows "),
        Span::styled(format!("{ab}"), Style::new().fg(BLUE)),
        Span::raw(" blue / "),
        Span::styled(format!("{ag}"), Style::new().fg(GREEN)),
        Span::raw(" green"),
    ]));
    let bar_width = usize::from(width).saturating_sub(40).clamp(10, 60);
    let mut l2 = vec![Span::raw("  ")];
    l2.extend(bar(s.recent, bar_width));
    match s.recent {
        Some(([b, g], span)) if b + g > 0 => {
            l2.push(Span::raw(" "));
            l2.push(Span::styled(share(b, b + g), Style::new().fg(BLUE)));
            l2.push(Span::raw(" blue "));
            l2.push(Span::styled(share(g, b + g), Style::new().fg(GREEN)));
            l2.push(Span::raw(format!(
                " green, {} new in {}",
                b + g,
                secs(span)
            )));
        }
        Some((_, span)) => l2.push(Span::styled(
            format!(" no new connections in {}", secs(span)),
            dim(),
        )),
        None => l2.push(Span::styled(" measuring...", dim())),
    }
    out.push(Line::from(l2));
    if s.health.iter().any(Option::is_some) {
        let mut l = vec![Span::raw("  health  blue ")];
        l.extend(health_span(s.health[0].as_ref()));
        l.push(Span::raw("  green "));
        l.extend(health_span(s.health[1].as_ref()));
        out.push(Line::from(l));
    }
    if let Some(r) = &s.rollout {
        let mut l = vec![
            Span::raw("  rollout "),
            Span::styled(
                label(&r.state),
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            ),
        ];
        if let Some(step) = r.step {
            // The status counts steps from 1, as people do.
            l.push(Span::raw(format!("  step {step}/{}", r.steps)));
        }
        if let Some(w) = r.step_weight_bp {
            l.push(Span::raw(format!(" at {}%", format_percent(w))));
        }
        if let Some(ms) = r.remaining_hold_ms {
            l.push(Span::raw(format!(
                "  {} left",
                secs(Duration::from_millis(ms))
            )));
        }
        if r.dry_run {
            l.push(Span::styled("  dry run", Style::new().fg(Color::Magenta)));
        }
        out.push(Line::from(l));
        // One line for the Prometheus analyses: each one's last result.
        let results: Vec<Span> = r
            .analysis
            .iter()
            .filter_map(|a| {
                let last = a.last.as_deref()?;
                let color = match last {
                    "success" => Color::Green,
                    "failure" => Color::Red,
                    _ => Color::Yellow,
                };
                let value = a.value.as_deref().unwrap_or("-");
                Some(Span::styled(
                    format!("  {} {last} {value}", a.name),
                    Style::new().fg(color),
                ))
            })
            .collect();
        if !results.is_empty() {
            let mut l = vec![Span::raw("  analysis")];
            l.extend(results);
            out.push(Line::from(l));
        }
    }
    if let Some(f) = &s.fleet {
        let settled = matches!(f.phase.as_deref(), Some("running" | "completed")) && !f.held;
        let color = if settled { Color::Cyan } else { Color::Yellow };
        out.push(Line::from(vec![
            Span::raw("  fleet "),
            Span::styled(f.summary(), Style::new().fg(color)),
        ]));
    }
    out
}

/// Draws the whole screen.
pub fn render(frame: &mut Frame, vm: &ViewModel) {
    let area = frame.area();
    let events_h = u16::try_from(vm.events.len().clamp(1, 6))
        .unwrap_or(6)
        .saturating_add(1);
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(events_h),
    ])
    .areas(area);

    let mut title = vec![
        Span::styled(
            " shifter watch ",
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
        ),
        Span::raw(format!(" {}  {}", vm.source, vm.clock)),
    ];
    match &vm.error {
        Some(e) => title.push(Span::styled(
            format!("  {e}"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        None => title.push(Span::styled("  q quits", dim())),
    }
    frame.render_widget(Paragraph::new(Line::from(title)), head);

    let mut lines: Vec<Line> = Vec::new();
    if let Some(a) = &vm.fleet {
        let color = if a.etcd_reachable {
            Color::Cyan
        } else {
            Color::Red
        };
        lines.push(Line::from(vec![
            Span::raw("fleet: "),
            Span::styled(a.summary(now_unix_ms()), Style::new().fg(color)),
        ]));
    }
    if vm.services.is_empty() {
        lines.push(Line::styled("no services configured", dim()));
    }
    let room = usize::from(body.height);
    for (i, s) in vm.services.iter().enumerate() {
        let mut chunk = vec![Line::raw("")];
        chunk.extend(service_lines(s, body.width));
        let last = i + 1 == vm.services.len();
        // Keep a row for the "more" note unless this is the last service.
        if lines.len() + chunk.len() + usize::from(!last) > room {
            let hidden = vm.services.len() - i;
            lines.push(Line::styled(
                format!("... {hidden} more service(s): make the terminal taller"),
                dim(),
            ));
            break;
        }
        lines.extend(chunk);
    }
    frame.render_widget(Paragraph::new(lines), body);

    let events: Vec<Line> = if vm.events.is_empty() {
        vec![Line::styled("none yet", dim())]
    } else {
        let skip = vm.events.len().saturating_sub(usize::from(events_h - 1));
        vm.events[skip..]
            .iter()
            .map(|e| Line::raw(e.clone()))
            .collect()
    };
    frame.render_widget(
        Paragraph::new(events).block(
            Block::new()
                .borders(Borders::TOP)
                .title(" last events (UTC) "),
        ),
        foot,
    );
}

/// The screen as text, one string per row (trailing spaces trimmed): for tests and
/// `shifter watch --once`.
pub fn render_text(vm: &ViewModel, width: u16, height: u16) -> Vec<String> {
    let backend = ratatui::backend::TestBackend::new(width, height);
    let mut term = ratatui::Terminal::new(backend).expect("test backend");
    term.draw(|f| render(f, vm))
        .expect("draw on the test backend");
    buffer_lines(term.backend().buffer())
}

/// Rows of a buffer as text (trailing spaces trimmed).
pub fn buffer_lines(buf: &Buffer) -> Vec<String> {
    let w = usize::from(buf.area.width);
    buf.content
        .chunks(w.max(1))
        .map(|row| {
            row.iter()
                .map(ratatui::buffer::Cell::symbol)
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::types::{Counters, ServiceStatus},
        events::Cause,
    };

    fn snap(blue: u64, green: u64) -> Status {
        let counters = |new_flows| Counters {
            new_flows,
            ..Counters::default()
        };
        Status {
            services: vec![ServiceStatus {
                name: "web".into(),
                blue: counters(blue),
                green: counters(green),
                ..ServiceStatus::default()
            }],
            ..Status::default()
        }
    }
    #[test]
    fn tracker_deltas_over_the_window() {
        let mut t = Tracker::new(Duration::from_secs(10));
        t.push(Duration::from_secs(0), &snap(100, 0));
        assert_eq!(t.recent("web"), None, "one sample: no rate yet");
        t.push(Duration::from_secs(5), &snap(110, 10));
        assert_eq!(t.recent("web"), Some(([10, 10], Duration::from_secs(5))));
        t.push(Duration::from_secs(12), &snap(120, 40));
        // Window start 2: no sample after 0 is at or before it, so 0 stays the baseline.
        assert_eq!(t.recent("web"), Some(([20, 40], Duration::from_secs(12))));
        t.push(Duration::from_secs(16), &snap(120, 50));
        // Window start 6: the sample at 5 becomes the baseline.
        assert_eq!(t.recent("web"), Some(([10, 40], Duration::from_secs(11))));
        // A counter that went down (daemon restarted) reads as 0, not as a wrap.
        t.push(Duration::from_secs(17), &snap(0, 0));
        assert_eq!(t.recent("web"), Some(([0, 0], Duration::from_secs(12))));
        assert_eq!(t.recent("other"), None);
    }

    #[test]
    fn bar_split_and_empty() {
        let text = |spans: Vec<Span>| {
            spans
                .iter()
                .map(|s| s.content.to_string())
                .collect::<String>()
        };
        assert_eq!(
            text(bar(Some(([3, 1], Duration::from_secs(1))), 8)),
            "██████▒▒"
        );
        assert_eq!(text(bar(Some(([0, 0], Duration::ZERO)), 4)), "····");
        assert_eq!(text(bar(None, 4)), "····");
        assert_eq!(text(bar(Some(([0, 5], Duration::ZERO)), 4)), "▒▒▒▒");
    }

    #[test]
    fn event_lines() {
        let ev = Event {
            seq: 3,
            time_ms: 1_700_000_000_000,
            service: "web".into(),
            old_weight_bp: Some(0),
            new_weight_bp: Some(2500),
            cause: Cause::Operator,
            uid: Some(0),
            detail: None,
            dry_run: false,
            map_update_ns: None,
            since_decision_ns: None,
            fleet_rollout: None,
        };
        assert_eq!(
            event_line(&ev),
            "22:13:20 web 0.00% -> 25.00% operator uid 0"
        );
        let ev = Event {
            time_ms: 0,
            old_weight_bp: Some(2500),
            new_weight_bp: Some(0),
            cause: Cause::HealthRollback,
            uid: None,
            ..ev
        };
        assert_eq!(
            event_line(&ev),
            "00:00:00 web 25.00% -> 0.00% health-rollback"
        );
        let ev = Event {
            fleet_rollout: Some("web-7".into()),
            ..ev
        };
        assert_eq!(
            event_line(&ev),
            "00:00:00 web 25.00% -> 0.00% health-rollback fleet web-7"
        );
    }
}
