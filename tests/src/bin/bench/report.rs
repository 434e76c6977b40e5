//! Figures and how they are shown: each figure keeps every repetition's value; the table
//! shows median, min and max, the `BENCH` lines and the JSON give the median.

use std::fmt::Write as _;

/// One measured quantity over its repetitions.
#[derive(Clone, Debug)]
pub(crate) struct Figure {
    /// Stable name, e.g. `transport.msg_rate.cohort`.
    pub(crate) name: String,
    /// Unit, e.g. `msg/s`, `MB/s`, `us`, `s`, `KiB`, `ratio`.
    pub(crate) unit: &'static str,
    /// One value per repetition.
    pub(crate) samples: Vec<f64>,
}

impl Figure {
    /// A figure from its repetitions.
    pub(crate) fn new(name: impl Into<String>, unit: &'static str, samples: Vec<f64>) -> Self {
        Figure {
            name: name.into(),
            unit,
            samples,
        }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    /// The median (the mean of the middle two for an even count); NaN with no samples.
    pub(crate) fn median(&self) -> f64 {
        let sorted = self.sorted();
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// Every figure of a run, in the order measured.
#[derive(Default)]
pub(crate) struct Report {
    figures: Vec<Figure>,
}

impl Report {
    /// Adds a figure and returns its median.
    pub(crate) fn add(&mut self, figure: Figure) -> f64 {
        let median = figure.median();
        self.figures.push(figure);
        median
    }

    /// Adds the ratio of two medians as a figure of its own (one sample per repetition
    /// pair when both have the same count, so min and max mean something).
    pub(crate) fn ratio(&mut self, name: impl Into<String>, over: &str, under: &str) {
        let find = |n: &str| self.figures.iter().find(|f| f.name == n).cloned();
        let (Some(a), Some(b)) = (find(over), find(under)) else {
            return;
        };
        let samples = if a.samples.len() == b.samples.len() {
            a.samples
                .iter()
                .zip(&b.samples)
                .map(|(x, y)| x / y)
                .collect()
        } else {
            vec![a.median() / b.median()]
        };
        self.figures.push(Figure::new(name, "ratio", samples));
    }

    /// The table, then the BENCH lines, on standard output.
    pub(crate) fn print(&self) {
        let width = self.figures.iter().map(|f| f.name.len()).max().unwrap_or(4);
        println!(
            "{:<width$}  {:>14}  {:>14}  {:>14}  {:<6}  reps",
            "figure", "median", "min", "max", "unit"
        );
        for f in &self.figures {
            println!(
                "{:<width$}  {:>14}  {:>14}  {:>14}  {:<6}  {}",
                f.name,
                show(f.median()),
                show(f.min()),
                show(f.max()),
                f.unit,
                f.samples.len()
            );
        }
        println!();
        for f in &self.figures {
            println!("BENCH {} {} {}", f.name, show(f.median()), f.unit);
        }
    }

    /// The figures as a JSON array (hand-written: names and units are plain ASCII).
    pub(crate) fn json(&self) -> String {
        let mut out = String::from("[\n");
        for (i, f) in self.figures.iter().enumerate() {
            let samples: Vec<String> = f.samples.iter().map(|v| json_number(*v)).collect();
            let _ = writeln!(
                out,
                "  {{\"name\": \"{}\", \"unit\": \"{}\", \"median\": {}, \"min\": {}, \"max\": {}, \"samples\": [{}]}}{}",
                f.name,
                f.unit,
                json_number(f.median()),
                json_number(f.min()),
                json_number(f.max()),
                samples.join(", "),
                if i + 1 < self.figures.len() { "," } else { "" }
            );
        }
        out.push_str("]\n");
        out
    }
}

/// A value with sensible precision: integers for large numbers, 3 significant decimals
/// for small ones.
fn show(value: f64) -> String {
    if !value.is_finite() {
        return "nan".into();
    }
    if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.3}")
    } else {
        format!("{value:.4}")
    }
}

fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_lines() {
        let mut report = Report::default();
        assert_eq!(
            report.add(Figure::new("a", "msg/s", vec![3.0, 1.0, 2.0])),
            2.0
        );
        assert_eq!(
            report.add(Figure::new("b", "msg/s", vec![4.0, 2.0, 1.0, 3.0])),
            2.5
        );
        report.add(Figure::new("c", "msg/s", vec![1.0, 2.0, 4.0]));
        report.ratio("a.vs_c", "a", "c");
        let ratio = report.figures.last().expect("ratio added");
        assert_eq!(ratio.samples, vec![3.0, 0.5, 0.5]);
        assert_eq!(ratio.median(), 0.5);
        let json = report.json();
        assert!(json.contains("\"name\": \"a.vs_c\""), "{json}");
        assert!(json.trim_end().ends_with(']'));
    }
}
