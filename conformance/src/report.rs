//! Where the self-test's lines go, and the tally.

use core::fmt;

/// A sink for the self-test's output lines (a serial port, stdout, a log).
pub trait Report {
    /// Writes one line (without the newline).
    fn line(&mut self, args: fmt::Arguments<'_>);
}

impl<W: fmt::Write> Report for W {
    fn line(&mut self, args: fmt::Arguments<'_>) {
        let _ = self.write_fmt(args);
        let _ = self.write_str("\n");
    }
}

/// A failure reason, formatted without a heap.
pub type Reason = heapless::String<112>;

/// Formats a [`Reason`]; text beyond its capacity is cut.
#[macro_export]
macro_rules! reason {
    ($($arg:tt)*) => {{
        let mut s = $crate::report::Reason::new();
        let _ = core::fmt::Write::write_fmt(&mut s, format_args!($($arg)*));
        s
    }};
}

/// The outcome of one check.
pub enum Outcome {
    /// It worked.
    Ok,
    /// It did not; why.
    Failed(Reason),
    /// It could not run here; why.
    Skipped(Reason),
}

impl From<Result<(), Reason>> for Outcome {
    fn from(r: Result<(), Reason>) -> Self {
        match r {
            Ok(()) => Outcome::Ok,
            Err(why) => Outcome::Failed(why),
        }
    }
}

/// Counts of checks by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
    /// Checks that were skipped.
    pub skipped: u32,
}

impl Totals {
    /// Records an outcome and prints its `test <name> ... ok|FAILED|skipped` line.
    pub fn record(&mut self, out: &mut dyn Report, name: fmt::Arguments<'_>, outcome: Outcome) {
        match outcome {
            Outcome::Ok => {
                self.passed += 1;
                out.line(format_args!("test {name} ... ok"));
            }
            Outcome::Failed(why) => {
                self.failed += 1;
                out.line(format_args!("test {name} ... FAILED: {why}"));
            }
            Outcome::Skipped(why) => {
                self.skipped += 1;
                out.line(format_args!("test {name} ... skipped: {why}"));
            }
        }
    }

    /// Prints the closing `N passed, N failed, N skipped` line.
    pub fn summary(&self, out: &mut dyn Report) {
        out.line(format_args!("{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped));
    }

    /// True when nothing failed and something passed.
    pub fn success(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }
}
