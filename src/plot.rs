//! Small PNG chart renderer for simulation reports: line charts (time series with event
//! markers) and grouped bar charts, drawn by our own code on an RGB8 raster with a built-in
//! 5x7 bitmap font and encoded with the `png` crate. No plotting library.
//!
//! What a chart shows: a white background, a title (font scaled 2x), axes with "nice" tick
//! values (steps of 1, 2 or 5 x 10^k) and light grid lines, axis labels (the y label is
//! written horizontally at the top-left, above the axis), and a legend (colour swatch and
//! name) when there is more than one series. Series take their colours from a fixed palette
//! of eight, in order, repeating after the eighth.
//!
//! Input handling, chosen so that rendering never panics:
//! - line series skip non-finite points (the line breaks there); a chart with no finite point
//!   at all is [`PlotError::Empty`]. Markers at a non-finite x are skipped; the others widen
//!   the x axis to include them.
//! - bar values must be finite ([`PlotError::NonFinite`]) and there must be one per category
//!   ([`PlotError::LengthMismatch`]).
//! - a range with no extent (all y equal, a single point) is padded around its value.
//! - a range too wide for `f64` arithmetic (say -1e308..1e308) is [`PlotError::Range`].
//! - `width` and `height` must both be within [`MIN_SIZE`]..=[`MAX_SIZE`]
//!   ([`PlotError::Size`]).
//!
//! ```
//! use pipemesh::plot::{BarChart, LineChart, Series};
//!
//! let mut chart = LineChart::new("Forwarded bitrate", "time (s)", "kbit/s");
//! chart.series.push(Series::new("viewer 1", vec![(0.0, 0.0), (1.0, 480.0), (2.0, 510.0)]));
//! chart.series.push(Series::new("viewer 2", vec![(0.0, 0.0), (1.0, 450.0), (2.0, 20.0)]));
//! chart.markers.push((1.5, "relay killed".to_string()));
//! chart.y_min_zero = true;
//! let png: Vec<u8> = chart.render_png().unwrap();
//! assert_eq!(&png[1..4], b"PNG");
//!
//! let bars = BarChart {
//!     categories: vec!["eu".into(), "us".into(), "ap".into()],
//!     series: vec![
//!         ("tree".into(), vec![120.0, 95.0, 180.0]),
//!         ("mesh".into(), vec![60.0, 70.0, 85.0]),
//!     ],
//!     ..BarChart::new("Join latency", "ms")
//! };
//! assert!(bars.render_png().is_ok());
//! ```

mod font;
mod raster;
#[cfg(test)]
mod tests;

use raster::{Canvas, Rect, Rgb};

/// Smallest accepted `width` and `height`, in pixels.
pub const MIN_SIZE: u32 = 64;
/// Largest accepted `width` and `height`, in pixels.
pub const MAX_SIZE: u32 = 4096;
/// Default chart width in pixels.
pub const DEFAULT_WIDTH: u32 = 900;
/// Default chart height in pixels.
pub const DEFAULT_HEIGHT: u32 = 500;

/// The series colours, used in order and repeated after the last.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],  // blue
    [255, 127, 14],  // orange
    [44, 160, 44],   // green
    [214, 39, 40],   // red
    [148, 103, 189], // purple
    [140, 86, 75],   // brown
    [227, 119, 194], // pink
    [23, 190, 207],  // cyan
];

const BACKGROUND: Rgb = [255, 255, 255];
const TEXT: Rgb = [33, 33, 33];
const AXIS: Rgb = [64, 64, 64];
const GRID: Rgb = [228, 228, 228];
const MARKER: Rgb = [128, 128, 128];
const MARKER_TEXT: Rgb = [90, 90, 90];

/// Outer margin, in pixels.
const PAD: i64 = 10;
/// Height of one line of unscaled text.
const TEXT_H: i64 = font::GLYPH_HEIGHT as i64;
/// Line series with fewer points than this also draw each point as a small square.
const POINT_SQUARES_BELOW: usize = 30;
/// Legend rows drawn at most; entries past them are summed up as "+N more".
const LEGEND_MAX_ROWS: usize = 3;
/// Longest name shown in a legend entry or marker label, in characters.
const MAX_LABEL_CHARS: usize = 32;

/// Why a chart could not be rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlotError {
    /// Nothing to draw: no series, no categories, or no finite point in any line series.
    #[error("empty chart: nothing to draw")]
    Empty,
    /// A bar series does not have exactly one value per category.
    #[error("bar series {series:?} has {actual} values for {expected} categories")]
    LengthMismatch {
        /// The series' name.
        series: String,
        /// Number of categories.
        expected: usize,
        /// Number of values in the series.
        actual: usize,
    },
    /// A bar value is NaN or infinite.
    #[error("bar series {series:?} has a non-finite value at index {index}")]
    NonFinite {
        /// The series' name.
        series: String,
        /// Index of the value (the category).
        index: usize,
    },
    /// `width` or `height` is outside `MIN_SIZE..=MAX_SIZE`.
    #[error("chart size {width}x{height} is outside {MIN_SIZE}..={MAX_SIZE}")]
    Size {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
    /// The data's range is too wide to compute an axis in `f64` (it overflows).
    #[error("data range too wide for an axis")]
    Range,
    /// The PNG encoder failed.
    #[error("png encoding: {0}")]
    Encode(String),
}

/// One line of a [`LineChart`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// `(x, y)` points, joined in the given order (x need not ascend). Non-finite points are
    /// skipped and break the line.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `name` with `points`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// A chart of lines over a numeric x axis, with optional vertical event markers.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Title, drawn at twice the font size above the plot.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label at the top-left, above the y axis.
    pub y_label: String,
    /// The lines, coloured from [`PALETTE`] in order.
    pub series: Vec<Series>,
    /// Vertical dashed lines at an x value, each with a short label (e.g. "relay killed").
    pub markers: Vec<(f64, String)>,
    /// Start the y axis at 0 (the axis always includes 0 when set).
    pub y_min_zero: bool,
    /// Image width in pixels, `MIN_SIZE..=MAX_SIZE`.
    pub width: u32,
    /// Image height in pixels, `MIN_SIZE..=MAX_SIZE`.
    pub height: u32,
}

/// A grouped bar chart: for each category along x, one bar per series.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Title, drawn at twice the font size above the plot.
    pub title: String,
    /// Label at the top-left, above the y axis.
    pub y_label: String,
    /// The groups along x (e.g. "eu", "us", "ap").
    pub categories: Vec<String>,
    /// `(name, values)`: one bar per series in each category, so `values.len()` must equal
    /// `categories.len()`. Values must be finite; negative values draw downwards from 0.
    /// Each bar is labelled with its value (see [`compact`]) when the label fits its width.
    pub series: Vec<(String, Vec<f64>)>,
    /// Image width in pixels, `MIN_SIZE..=MAX_SIZE`.
    pub width: u32,
    /// Image height in pixels, `MIN_SIZE..=MAX_SIZE`.
    pub height: u32,
}

/// A laid-out numeric axis: its extent (rounded out to whole steps) and tick values.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// Where `v` falls between `lo` (0.0) and `hi` (1.0).
    fn frac(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    /// The tick labels, formatted for this axis' step and magnitude.
    fn labels(&self) -> Vec<String> {
        self.ticks
            .iter()
            .map(|&t| tick_label(t, self.step, self.lo.abs().max(self.hi.abs())))
            .collect()
    }
}

/// A rendered chart before encoding, with its layout (used by tests to find pixels).
#[derive(Debug, Clone)]
struct Rendered {
    canvas: Canvas,
    // The layout below is only read by tests, which look for pixels where it says.
    /// The data area: axis extents map onto its first and last columns and rows.
    #[cfg_attr(not(test), allow(dead_code))]
    plot: Rect,
    /// The x axis (line charts; bar charts use a dummy 0..1 axis).
    #[cfg_attr(not(test), allow(dead_code))]
    x: Axis,
    /// The y axis.
    #[cfg_attr(not(test), allow(dead_code))]
    y: Axis,
}

#[cfg(test)]
impl Rendered {
    fn x_px(&self, v: f64) -> i64 {
        x_px(self.plot, &self.x, v)
    }

    fn y_px(&self, v: f64) -> i64 {
        y_px(self.plot, &self.y, v)
    }
}

fn to_px(v: f64) -> i64 {
    // NaN maps to 0; the clamp keeps later i64 arithmetic far from overflow.
    v.clamp(-1e7, 1e7).round() as i64
}

fn x_px(plot: Rect, axis: &Axis, v: f64) -> i64 {
    plot.x + to_px(axis.frac(v) * (plot.w - 1) as f64)
}

fn y_px(plot: Rect, axis: &Axis, v: f64) -> i64 {
    plot.bottom() - 1 - to_px(axis.frac(v) * (plot.h - 1) as f64)
}

fn check_size(width: u32, height: u32) -> Result<(), PlotError> {
    let ok = |v: u32| (MIN_SIZE..=MAX_SIZE).contains(&v);
    if ok(width) && ok(height) {
        Ok(())
    } else {
        Err(PlotError::Size { width, height })
    }
}

impl LineChart {
    /// An empty chart of the default size (900x500) with these labels.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> LineChart {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            markers: Vec::new(),
            y_min_zero: false,
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
        }
    }

    /// Renders the chart as an RGB8 PNG.
    pub fn render_png(&self) -> Result<Vec<u8>, PlotError> {
        encode_png(&self.render()?.canvas)
    }

    fn render(&self) -> Result<Rendered, PlotError> {
        check_size(self.width, self.height)?;
        let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
        let mut xs = Bounds::default();
        let mut ys = Bounds::default();
        for &(x, y) in self
            .series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|p| finite(p))
        {
            xs.add(x);
            ys.add(y);
        }
        let (Some((xlo, xhi)), Some((mut ylo, mut yhi))) = (xs.get(), ys.get()) else {
            return Err(PlotError::Empty);
        };
        let markers: Vec<(f64, &str)> = self
            .markers
            .iter()
            .filter(|(x, _)| x.is_finite())
            .map(|(x, l)| (*x, l.as_str()))
            .collect();
        let (xlo, xhi) = markers
            .iter()
            .fold((xlo, xhi), |(lo, hi), &(x, _)| (lo.min(x), hi.max(x)));
        if self.y_min_zero {
            ylo = ylo.min(0.0);
            yhi = yhi.max(0.0);
        }

        let (w, h) = (i64::from(self.width), i64::from(self.height));
        let names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        let header = Header::layout(&self.title, &self.y_label, &names, w);
        let top = header.bottom + TEXT_H / 2 + 2;
        let x_label_h = if self.x_label.is_empty() {
            0
        } else {
            TEXT_H + 6
        };
        let bottom = h - PAD - x_label_h - TEXT_H - 8;
        let plot_h = (bottom - top).max(1);
        let y = nice_axis(ylo, yhi, (plot_h / 45).clamp(2, 10) as usize)?;
        let y_labels = y.labels();
        let left = PAD + max_text_width(&y_labels) + 8;
        let right = w - PAD - 14;
        let plot_w = (right - left).max(1);
        let x = fitting_x_axis(xlo, xhi, plot_w)?;
        let plot = Rect {
            x: left,
            y: top,
            w: plot_w,
            h: plot_h,
        };

        let mut c = Canvas::new(self.width, self.height, BACKGROUND);
        draw_grid_and_axes(&mut c, plot, Some(&x), &y, &y_labels);
        for &(mx, _) in &markers {
            c.dashed_vline(x_px(plot, &x, mx), plot.y, plot.bottom() - 1, 6, 4, MARKER);
        }
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let mut prev: Option<(i64, i64)> = None;
            let squares = s.points.len() < POINT_SQUARES_BELOW;
            for p in &s.points {
                if !finite(p) {
                    prev = None;
                    continue;
                }
                let cur = (x_px(plot, &x, p.0), y_px(plot, &y, p.1));
                c.thick_line(prev.unwrap_or(cur), cur, plot, color);
                if squares {
                    c.fill_rect(
                        Rect {
                            x: cur.0 - 2,
                            y: cur.1 - 2,
                            w: 5,
                            h: 5,
                        },
                        color,
                    );
                }
                prev = Some(cur);
            }
        }
        for (k, &(mx, label)) in markers.iter().enumerate() {
            let label = truncate(label);
            let px = x_px(plot, &x, mx);
            let tw = i64::from(font::text_width(&label, 1));
            let lx = if px + 4 + tw <= plot.right() {
                px + 4
            } else {
                px - 4 - tw
            };
            let ly = plot.y + 3 + (k % 3) as i64 * (TEXT_H + 4);
            c.text(lx, ly, &label, 1, MARKER_TEXT);
        }
        header.draw(&mut c, w);
        if !self.x_label.is_empty() {
            let tw = i64::from(font::text_width(&self.x_label, 1));
            c.text(
                plot.x + (plot.w - tw) / 2,
                h - PAD - TEXT_H,
                &self.x_label,
                1,
                TEXT,
            );
        }
        Ok(Rendered {
            canvas: c,
            plot,
            x,
            y,
        })
    }
}

impl BarChart {
    /// An empty chart of the default size (900x500) with these labels.
    pub fn new(title: impl Into<String>, y_label: impl Into<String>) -> BarChart {
        BarChart {
            title: title.into(),
            y_label: y_label.into(),
            categories: Vec::new(),
            series: Vec::new(),
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
        }
    }

    /// Renders the chart as an RGB8 PNG.
    pub fn render_png(&self) -> Result<Vec<u8>, PlotError> {
        encode_png(&self.render()?.canvas)
    }

    fn render(&self) -> Result<Rendered, PlotError> {
        check_size(self.width, self.height)?;
        if self.categories.is_empty() || self.series.is_empty() {
            return Err(PlotError::Empty);
        }
        let mut ys = Bounds::default();
        ys.add(0.0);
        for (name, values) in &self.series {
            if values.len() != self.categories.len() {
                return Err(PlotError::LengthMismatch {
                    series: name.clone(),
                    expected: self.categories.len(),
                    actual: values.len(),
                });
            }
            if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                return Err(PlotError::NonFinite {
                    series: name.clone(),
                    index,
                });
            }
            values.iter().for_each(|&v| ys.add(v));
        }
        let (ylo, mut yhi) = ys.get().unwrap_or((0.0, 1.0));
        if ylo == 0.0 && yhi == 0.0 {
            yhi = 1.0;
        }

        let (w, h) = (i64::from(self.width), i64::from(self.height));
        let names: Vec<&str> = self.series.iter().map(|s| s.0.as_str()).collect();
        let header = Header::layout(&self.title, &self.y_label, &names, w);
        // Room for the value labels above the tallest bar (and below the lowest).
        let top = header.bottom + TEXT_H + 6;
        let below = if ylo < 0.0 { TEXT_H + 4 } else { 0 };
        let bottom = h - PAD - TEXT_H - 6 - below;
        let plot_h = (bottom - top).max(1);
        let y = nice_axis(ylo, yhi, (plot_h / 45).clamp(2, 10) as usize)?;
        let y_labels = y.labels();
        let left = PAD + max_text_width(&y_labels) + 8;
        let plot_w = (w - PAD - left).max(1);
        let plot = Rect {
            x: left,
            y: top,
            w: plot_w,
            h: plot_h,
        };
        let x = Axis {
            lo: 0.0,
            hi: 1.0,
            step: 1.0,
            ticks: Vec::new(),
        };

        let mut c = Canvas::new(self.width, self.height, BACKGROUND);
        draw_grid_and_axes(&mut c, plot, None, &y, &y_labels);
        let ncat = self.categories.len() as f64;
        let nser = self.series.len() as f64;
        let group_w = plot.w as f64 / ncat;
        let bar_w = group_w * 0.8 / nser;
        let gap = if bar_w >= 6.0 { 1 } else { 0 };
        let zero = y_px(plot, &y, 0.0);
        for (ci, cat) in self.categories.iter().enumerate() {
            let gx = plot.x as f64 + group_w * ci as f64;
            for (si, (_, values)) in self.series.iter().enumerate() {
                let color = PALETTE[si % PALETTE.len()];
                let v = values[ci];
                let x0 = to_px(gx + group_w * 0.1 + bar_w * si as f64) + gap;
                let x1 = (to_px(gx + group_w * 0.1 + bar_w * (si + 1) as f64) - gap).max(x0 + 1);
                let top_px = y_px(plot, &y, v);
                let (y0, y1) = (top_px.min(zero), top_px.max(zero));
                c.fill_rect(
                    Rect {
                        x: x0,
                        y: y0,
                        w: x1 - x0,
                        h: y1 - y0 + 1,
                    },
                    color,
                );
                let label = compact(v);
                let tw = i64::from(font::text_width(&label, 1));
                // Only labels narrower than the bar's slot, so neighbours never overlap.
                if tw + 2 <= to_px(bar_w) {
                    let ly = if v >= 0.0 { y0 - TEXT_H - 3 } else { y1 + 3 };
                    c.text((x0 + x1 - tw) / 2, ly, &label, 1, TEXT);
                }
            }
            let cat = truncate(cat);
            let tw = i64::from(font::text_width(&cat, 1));
            let cx = to_px(gx + group_w / 2.0);
            c.text(cx - tw / 2, plot.bottom() + 6 + below, &cat, 1, TEXT);
        }
        if y.lo < 0.0 {
            c.hline(plot.x, plot.right() - 1, zero, AXIS);
        }
        header.draw(&mut c, w);
        Ok(Rendered {
            canvas: c,
            plot,
            x,
            y,
        })
    }
}

/// Running min and max of finite values.
#[derive(Default)]
struct Bounds(Option<(f64, f64)>);

impl Bounds {
    fn add(&mut self, v: f64) {
        self.0 = Some(match self.0 {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }

    fn get(&self) -> Option<(f64, f64)> {
        self.0
    }
}

/// One centred row of legend entries.
struct LegendRow {
    /// Left column of the first entry.
    x: i64,
    /// Top row of the text.
    y: i64,
    /// `(series index, shown name)`.
    entries: Vec<(usize, String)>,
}

/// The title, legend and y label above the plot, laid out for a canvas `width` wide.
struct Header<'a> {
    title: &'a str,
    title_y: i64,
    /// Legend rows, top to bottom.
    legend: Vec<LegendRow>,
    /// Series left out of the legend for want of rows, shown as "+N more".
    legend_more: usize,
    y_label: &'a str,
    y_label_y: i64,
    /// First row below the header.
    bottom: i64,
}

const SWATCH_W: i64 = 12;
const LEGEND_ROW_H: i64 = TEXT_H + 6;
const LEGEND_GAP: i64 = 18;

impl<'a> Header<'a> {
    fn layout(title: &'a str, y_label: &'a str, names: &[&str], width: i64) -> Header<'a> {
        let mut y = PAD;
        let title_y = y;
        if !title.is_empty() {
            y += TEXT_H * 2 + 10;
        }
        let mut legend = Vec::new();
        let mut legend_more = 0;
        if names.len() > 1 {
            let avail = (width - 2 * PAD).max(1);
            let mut rows: Vec<(i64, Vec<(usize, String)>)> = vec![(0, Vec::new())];
            for (i, name) in names.iter().enumerate() {
                let name = truncate(name);
                let ew = SWATCH_W + 4 + i64::from(font::text_width(&name, 1));
                let (row_w, entries) = rows.last_mut().expect("one row at least");
                let needed = if entries.is_empty() {
                    ew
                } else {
                    LEGEND_GAP + ew
                };
                if entries.is_empty() || *row_w + needed <= avail {
                    *row_w += needed;
                    entries.push((i, name));
                } else if rows.len() < LEGEND_MAX_ROWS {
                    rows.push((ew, vec![(i, name)]));
                } else {
                    legend_more = names.len() - i;
                    break;
                }
            }
            for (row_w, entries) in rows {
                legend.push(LegendRow {
                    x: (width - row_w) / 2,
                    y,
                    entries,
                });
                y += LEGEND_ROW_H;
            }
            y += 2;
        }
        let y_label_y = y;
        if !y_label.is_empty() {
            y += TEXT_H + 6;
        }
        Header {
            title,
            title_y,
            legend,
            legend_more,
            y_label,
            y_label_y,
            bottom: y,
        }
    }

    fn draw(&self, c: &mut Canvas, width: i64) {
        if !self.title.is_empty() {
            let tw = i64::from(font::text_width(self.title, 2));
            c.text(((width - tw) / 2).max(0), self.title_y, self.title, 2, TEXT);
        }
        let rows = self.legend.len();
        for (r, LegendRow { x: x0, y, entries }) in self.legend.iter().enumerate() {
            let mut x = *x0;
            for (i, name) in entries {
                c.fill_rect(
                    Rect {
                        x,
                        y: y + 1,
                        w: SWATCH_W,
                        h: TEXT_H - 2,
                    },
                    PALETTE[i % PALETTE.len()],
                );
                x += SWATCH_W + 4;
                c.text(x, *y, name, 1, TEXT);
                x += i64::from(font::text_width(name, 1)) + LEGEND_GAP;
            }
            if r + 1 == rows && self.legend_more > 0 {
                c.text(x, *y, &format!("+{} more", self.legend_more), 1, TEXT);
            }
        }
        if !self.y_label.is_empty() {
            c.text(PAD, self.y_label_y, self.y_label, 1, TEXT);
        }
    }
}

/// Grid lines, the two axes, tick marks and tick labels. `x` is `None` for bar charts (no
/// vertical grid, no x ticks).
fn draw_grid_and_axes(c: &mut Canvas, plot: Rect, x: Option<&Axis>, y: &Axis, y_labels: &[String]) {
    for &t in &y.ticks {
        c.hline(plot.x, plot.right() - 1, y_px(plot, y, t), GRID);
    }
    if let Some(x) = x {
        for &t in &x.ticks {
            c.vline(x_px(plot, x, t), plot.y, plot.bottom() - 1, GRID);
        }
    }
    c.vline(plot.x - 1, plot.y, plot.bottom(), AXIS);
    c.hline(plot.x - 1, plot.right() - 1, plot.bottom(), AXIS);
    for (&t, label) in y.ticks.iter().zip(y_labels) {
        let py = y_px(plot, y, t);
        c.hline(plot.x - 5, plot.x - 1, py, AXIS);
        let tw = i64::from(font::text_width(label, 1));
        c.text(plot.x - 8 - tw, py - TEXT_H / 2, label, 1, TEXT);
    }
    if let Some(x) = x {
        for (&t, label) in x.ticks.iter().zip(x.labels()) {
            let px = x_px(plot, x, t);
            c.vline(px, plot.bottom(), plot.bottom() + 4, AXIS);
            let tw = i64::from(font::text_width(&label, 1));
            c.text(px - tw / 2, plot.bottom() + 7, &label, 1, TEXT);
        }
    }
}

/// An x axis for `lo..=hi` whose tick labels fit side by side in `plot_w` pixels.
fn fitting_x_axis(lo: f64, hi: f64, plot_w: i64) -> Result<Axis, PlotError> {
    let mut target = (plot_w / 100).clamp(2, 12) as usize;
    loop {
        let axis = nice_axis(lo, hi, target)?;
        let widest = max_text_width(&axis.labels());
        let slots = axis.ticks.len().max(1) as i64;
        if target <= 2 || (widest + 12) * slots <= plot_w {
            return Ok(axis);
        }
        target -= 1;
    }
}

fn max_text_width(labels: &[String]) -> i64 {
    labels
        .iter()
        .map(|l| i64::from(font::text_width(l, 1)))
        .max()
        .unwrap_or(0)
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_LABEL_CHARS - 3).collect();
        t.push_str("...");
        t
    }
}

/// Widens a range with no extent (or one lost in rounding) around its middle.
fn pad_degenerate(lo: f64, hi: f64) -> (f64, f64) {
    let scale = lo.abs().max(hi.abs());
    let span = hi - lo;
    if span > scale * 1e-9 && span > 1e-200 {
        return (lo, hi);
    }
    let mid = lo / 2.0 + hi / 2.0;
    let pad = if scale > 1e-200 { scale * 0.1 } else { 1.0 };
    (mid - pad, mid + pad)
}

/// An axis covering `lo..=hi` with about `target` ticks at a 1/2/5 x 10^k step, its ends
/// rounded out to whole steps.
fn nice_axis(lo: f64, hi: f64, target: usize) -> Result<Axis, PlotError> {
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(PlotError::Range);
    }
    let (lo, hi) = pad_degenerate(lo.min(hi), hi.max(lo));
    let span = hi - lo;
    if !span.is_finite() {
        return Err(PlotError::Range);
    }
    let step = nice_step(span / target.max(1) as f64);
    if !(step.is_finite() && step > 0.0) {
        return Err(PlotError::Range);
    }
    let nlo = (lo / step).floor() * step;
    let nhi = (hi / step).ceil() * step;
    if !((nhi - nlo).is_finite() && nhi > nlo) {
        return Err(PlotError::Range);
    }
    let n = ((nhi - nlo) / step).round().clamp(1.0, 200.0) as usize;
    let ticks = (0..=n)
        .map(|i| {
            let t = nlo + i as f64 * step;
            // Snap values that should be 0 but carry rounding noise ("-0.0000001").
            if t.abs() < step * 1e-6 {
                0.0
            } else {
                t
            }
        })
        .filter(|&t| t <= nhi + step * 1e-6)
        .collect();
    Ok(Axis {
        lo: nlo,
        hi: nhi,
        step,
        ticks,
    })
}

/// The smallest 1, 2 or 5 x 10^k that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let f = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    f * mag
}

/// A tick label: plain decimals matching the step for ordinary magnitudes, compact (k/M/G/T
/// suffixes or exponent) for large ones or tiny steps.
fn tick_label(v: f64, step: f64, max_abs: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    if max_abs >= 1e6 || step < 1e-4 {
        let sig = (max_abs.log10().floor() - step.log10().floor() + 1.0).clamp(1.0, 12.0);
        return compact_sig(v, sig as usize);
    }
    let decimals = (-step.log10().floor()).clamp(0.0, 10.0) as usize;
    format!("{v:.decimals$}")
}

/// `v` with 3 significant digits and a k/M/G/T suffix: 1234 -> "1.23k", 5 -> "5",
/// 0.1234 -> "0.123", 2.5e6 -> "2.5M". Tiny and enormous magnitudes use an exponent.
pub fn compact(v: f64) -> String {
    compact_sig(v, 3)
}

fn compact_sig(v: f64, sig: usize) -> String {
    let sig = sig.clamp(1, 15);
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".to_string()
        } else if v > 0.0 {
            "inf".to_string()
        } else {
            "-inf".to_string()
        };
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    let sign = if v < 0.0 { "-" } else { "" };
    let exponent = |a: f64| {
        let s = format!("{:.*e}", sig - 1, a);
        match s.split_once('e') {
            Some((m, e)) => format!("{sign}{}e{e}", trim_zeros(m)),
            None => format!("{sign}{s}"),
        }
    };
    if !(1e-3..1e15).contains(&a) {
        return exponent(a);
    }
    let e = a.log10().floor() as i32;
    let factor = 10f64.powi(e - sig as i32 + 1);
    let r = (a / factor).round() * factor;
    if r >= 1e15 {
        return exponent(a);
    }
    let (div, suffix) = if r >= 1e12 {
        (1e12, "T")
    } else if r >= 1e9 {
        (1e9, "G")
    } else if r >= 1e6 {
        (1e6, "M")
    } else if r >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let scaled = r / div;
    // Digits before the point; 0 or less for 0.0123 (as many leading zeros after it).
    let int_digits = scaled.log10().floor() as i32 + 1;
    let decimals = (sig as i32 - int_digits).max(0) as usize;
    let s = format!("{scaled:.decimals$}");
    format!("{sign}{}{suffix}", trim_zeros(&s))
}

/// "1.50" -> "1.5", "2.00" -> "2", "120" -> "120".
fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn encode_png(c: &Canvas) -> Result<Vec<u8>, PlotError> {
    let err = |e: png::EncodingError| PlotError::Encode(e.to_string());
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, c.width, c.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(err)?;
    writer.write_image_data(&c.pixels).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}
