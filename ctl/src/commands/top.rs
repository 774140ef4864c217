//! `top`: a live terminal view of units, queues and pool jobs (ratatui over crossterm), for
//! a server without a browser. `--once` draws one frame as plain text and exits.
//!
//! Each refresh asks corrald for `status`, `queue_list` and `pool_list` over the one
//! connection; rates (queue put/get per second, pool items per second) are the change since
//! the previous refresh. Nothing is kept beyond the previous refresh.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use corral_client::proto::{
    InstanceState, Op, PoolJob, PoolListResult, QueueInfo, QueueListResult, StatusResult,
};
use corral_client::{Client, Error};
use ratatui::Terminal;
use ratatui::backend::{CrosstermBackend, TestBackend};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use crate::output::human_duration;

/// What one refresh fetched.
struct Snapshot {
    at: Instant,
    status: StatusResult,
    queues: Vec<QueueInfo>,
    jobs: Vec<PoolJob>,
}

/// Rates between two snapshots.
#[derive(Default)]
struct Rates {
    /// Queue → (put/s, got/s).
    queues: HashMap<String, (f64, f64)>,
    /// Job id → items/s.
    jobs: HashMap<u64, f64>,
}

fn fetch(client: &Client) -> Result<Snapshot, Error> {
    let status = client.status(None)?;
    let queues: QueueListResult = client.call(Op::QueueList {})?;
    let jobs: PoolListResult = client.call(Op::PoolList {})?;
    Ok(Snapshot {
        at: Instant::now(),
        status,
        queues: queues.queues,
        jobs: jobs.jobs,
    })
}

fn rates(before: Option<&Snapshot>, now: &Snapshot) -> Rates {
    let Some(before) = before else {
        return Rates::default();
    };
    let secs = now.at.duration_since(before.at).as_secs_f64().max(0.001);
    let per_sec = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
    let mut r = Rates::default();
    for q in &now.queues {
        if let Some(b) = before.queues.iter().find(|b| b.queue == q.queue) {
            r.queues.insert(
                q.queue.clone(),
                (
                    per_sec(q.put_total, b.put_total),
                    per_sec(q.got_total, b.got_total),
                ),
            );
        }
    }
    for j in &now.jobs {
        if let Some(b) = before.jobs.iter().find(|b| b.job == j.job) {
            let done = |j: &PoolJob| (j.succeeded + j.failed) as u64;
            r.jobs.insert(j.job, per_sec(done(j), done(b)));
        }
    }
    r
}

fn state_style(state: InstanceState) -> Style {
    match state {
        InstanceState::Running => Style::new().fg(Color::Green),
        InstanceState::Failed => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        InstanceState::Starting | InstanceState::Backoff | InstanceState::Stopping => {
            Style::new().fg(Color::Yellow)
        }
        _ => Style::new().fg(Color::DarkGray),
    }
}

/// A text progress bar `[#####.....]` of `width` cells.
fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn head(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.iter().copied()).style(Style::new().add_modifier(Modifier::BOLD))
}

/// Rows each table needs, to size them (and the `--once` frame).
fn heights(s: &Snapshot) -> [u16; 3] {
    let units: usize = s
        .status
        .units
        .iter()
        .map(|u| u.instances.len().max(1))
        .sum();
    let rows = |n: usize| (n.max(1) + 3).min(u16::MAX as usize) as u16; // borders + header
    [rows(units), rows(s.queues.len()), rows(s.jobs.len())]
}

fn draw(frame: &mut ratatui::Frame, s: &Snapshot, r: &Rates, footer: &str) {
    let [units_h, queues_h, jobs_h] = heights(s);
    let [top, units, queues, jobs, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Max(units_h),
        Constraint::Max(queues_h),
        Constraint::Max(jobs_h),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let instances: usize = s.status.units.iter().map(|u| u.instances.len()).sum();
    let running = s
        .status
        .units
        .iter()
        .flat_map(|u| &u.instances)
        .filter(|i| i.state == InstanceState::Running)
        .count();
    let summary = Line::from(vec![
        Span::styled("corral top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {} units, {running}/{instances} instances running, {} queues, {} pool jobs",
            s.status.units.len(),
            s.queues.len(),
            s.jobs.len()
        )),
    ]);
    frame.render_widget(Paragraph::new(summary), top);
    frame.render_widget(units_table(s), units);
    frame.render_widget(queues_table(s, r), queues);
    frame.render_widget(jobs_table(s, r, jobs), jobs);
    frame.render_widget(
        Paragraph::new(footer.to_owned()).style(Style::new().fg(Color::DarkGray)),
        bottom,
    );
}

fn units_table(s: &Snapshot) -> Table<'static> {
    let mut rows = Vec::new();
    for u in &s.status.units {
        for (n, i) in u.instances.iter().enumerate() {
            let name = if n == 0 {
                u.name.clone()
            } else {
                String::new()
            };
            let exit = i.last_exit.as_ref().map_or("-".into(), |e| match e.code {
                Some(c) => format!("exit {c}"),
                None => format!("signal {}", e.signal.unwrap_or(0)),
            });
            rows.push(Row::new(vec![
                Cell::from(name),
                Cell::from(i.instance.to_string()),
                Cell::from(i.state.as_str()).style(state_style(i.state)),
                Cell::from(i.pid.map_or("-".into(), |p| p.to_string())),
                Cell::from(i.uptime_ms.map_or("-".into(), human_duration)),
                Cell::from(i.restarts.to_string()),
                Cell::from(exit),
                Cell::from(i.reason.clone().unwrap_or_default()),
            ]));
        }
    }
    Table::new(
        rows,
        [
            Constraint::Min(12),
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Fill(1),
        ],
    )
    .header(head(&[
        "UNIT",
        "#",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "REASON",
    ]))
    .block(Block::bordered().title(" units "))
}

fn queues_table(s: &Snapshot, r: &Rates) -> Table<'static> {
    let rows = s.queues.iter().map(|q| {
        let (put, got) = r.queues.get(&q.queue).copied().unzip();
        Row::new(vec![
            q.queue.clone(),
            q.depth.to_string(),
            q.maxsize.map_or("-".into(), |m| m.to_string()),
            q.put_total.to_string(),
            q.got_total.to_string(),
            rate(put),
            rate(got),
            q.waiting_getters.to_string(),
        ])
    });
    Table::new(
        rows,
        [
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
        ],
    )
    .header(head(&[
        "QUEUE", "DEPTH", "MAX", "PUT", "GOT", "PUT/S", "GOT/S", "WAITING",
    ]))
    .block(Block::bordered().title(" queues "))
}

fn jobs_table(s: &Snapshot, r: &Rates, area: Rect) -> Table<'static> {
    // The bar takes what the other columns leave (at least 10 cells).
    let bar_width = (area.width as usize)
        .saturating_sub(2 + 6 + 12 + 10 + 12 + 8 + 8 + 7 + 8)
        .max(10);
    let rows = s.jobs.iter().map(|j| {
        let done = j.succeeded + j.failed;
        Row::new(vec![
            Cell::from(j.job.to_string()),
            Cell::from(j.name.clone().unwrap_or_else(|| "-".into())),
            Cell::from(j.state.as_str()),
            Cell::from(format!("{done}/{}", j.total)),
            Cell::from(bar(done, j.total, bar_width)),
            Cell::from(j.failed.to_string()),
            Cell::from(j.running.to_string()),
            Cell::from(rate(r.jobs.get(&j.job).copied())),
        ])
    });
    Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Length(11),
            Constraint::Length(bar_width as u16 + 2),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
        ],
    )
    .header(head(&[
        "JOB", "NAME", "STATE", "DONE", "PROGRESS", "FAILED", "RUNNING", "ITEMS/S",
    ]))
    .block(Block::bordered().title(" pool jobs "))
}

/// `corralctl top [--once] [--interval D]`.
pub fn top(
    client: &Client,
    out: &crate::output::Output,
    once: bool,
    interval: Duration,
) -> Result<ExitCode, Error> {
    if out.json {
        return Ok(crate::commands::failed(
            "top draws for people; for JSON use `corralctl --json status`, `queue list` and `pool list`",
        ));
    }
    if once {
        return print_once(client);
    }
    if !io::stdout().is_terminal() {
        return Ok(crate::commands::failed(
            "top needs a terminal; use `corralctl top --once` to print one frame, or `corralctl status`",
        ));
    }
    let result = run_live(client, interval);
    match result {
        Ok(r) => r,
        Err(e) => Ok(crate::commands::failed(format!("terminal: {e}"))),
    }
}

/// One frame, drawn into an off-screen buffer as wide as the terminal (or 100 columns)
/// and as tall as the tables need, printed as plain text.
fn print_once(client: &Client) -> Result<ExitCode, Error> {
    let first = fetch(client)?;
    // Two samples a moment apart, so the rates mean something.
    std::thread::sleep(Duration::from_millis(500));
    let snap = fetch(client)?;
    let r = rates(Some(&first), &snap);
    let width = terminal::size()
        .ok()
        .filter(|_| io::stdout().is_terminal())
        .map_or(100, |(w, _)| w.max(40));
    let height = 2 + heights(&snap).iter().sum::<u16>();
    let mut term = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(e) => return Ok(crate::commands::failed(format!("drawing the frame: {e}"))),
    };
    if let Err(e) = term.draw(|f| draw(f, &snap, &r, "")) {
        return Ok(crate::commands::failed(format!("drawing the frame: {e}")));
    }
    let buffer = term.backend().buffer().clone();
    let lines = (0..buffer.area.height).map(|y| {
        let mut line = String::new();
        for x in 0..buffer.area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        line.trim_end().to_owned()
    });
    // The empty footer line is left out.
    let lines: Vec<String> = lines.collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    Ok(crate::commands::print_lines(lines.into_iter().take(end)))
}

/// Restores the terminal when dropped: on return, on error and on panic.
struct Screen;

impl Screen {
    fn enter() -> io::Result<Screen> {
        terminal::enable_raw_mode()?;
        let screen = Screen;
        execute!(io::stdout(), terminal::EnterAlternateScreen)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            io::stdout(),
            terminal::LeaveAlternateScreen,
            ratatui::crossterm::cursor::Show
        );
        let _ = terminal::disable_raw_mode();
        let _ = io::stdout().flush();
    }
}

fn run_live(client: &Client, interval: Duration) -> io::Result<Result<ExitCode, Error>> {
    let _screen = Screen::enter()?;
    let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    term.hide_cursor()?;
    let footer = format!(
        "q quit · refreshes every {}",
        corral_config::format_duration(interval)
    );
    let mut previous: Option<Snapshot> = None;
    loop {
        let snap = match fetch(client) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let r = rates(previous.as_ref(), &snap);
        term.draw(|f| draw(f, &snap, &r, &footer))?;
        previous = Some(snap);
        let next = Instant::now() + interval;
        // Keys (and resizes, which redraw) until the next refresh.
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if !event::poll(left)? {
                break;
            }
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(Ok(ExitCode::SUCCESS));
                    }
                }
                Event::Resize(..) => {
                    if let Some(s) = &previous {
                        term.autoresize()?;
                        term.draw(|f| draw(f, s, &r, &footer))?;
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 10, 10), "[..........]");
        assert_eq!(bar(5, 10, 10), "[#####.....]");
        assert_eq!(bar(10, 10, 4), "[####]");
        assert_eq!(bar(0, 0, 4), "[####]");
    }
}
