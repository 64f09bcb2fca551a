//! Tests of the chart renderer: decode the PNG it writes and look for the pixels it promised.

use super::*;
use rand::{Rng, SeedableRng};

/// A decoded RGB8 image.
struct Image {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Image {
    fn at(&self, x: i64, y: i64) -> Rgb {
        assert!(x >= 0 && y >= 0 && x < i64::from(self.width) && y < i64::from(self.height));
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Rows of column `x` within `y0..y1` whose colour is `color`.
    fn rows_with(&self, x: i64, y0: i64, y1: i64, color: Rgb) -> Vec<i64> {
        (y0..y1).filter(|&y| self.at(x, y) == color).collect()
    }
}

fn decode(png_bytes: &[u8]) -> Image {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("png header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut pixels).expect("png frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    pixels.truncate(info.buffer_size());
    Image {
        width: info.width,
        height: info.height,
        pixels,
    }
}

fn two_line_chart() -> LineChart {
    let mut chart = LineChart::new("Two lines", "time (s)", "value");
    chart
        .series
        .push(Series::new("flat", vec![(0.0, 5.0), (10.0, 5.0)]));
    chart
        .series
        .push(Series::new("top", vec![(0.0, 10.0), (10.0, 10.0)]));
    chart.y_min_zero = true;
    chart
}

#[test]
fn line_chart_png_has_the_requested_size() {
    let mut chart = two_line_chart();
    let img = decode(&chart.render_png().unwrap());
    assert_eq!((img.width, img.height), (900, 500));
    chart.width = 321;
    chart.height = 123;
    let img = decode(&chart.render_png().unwrap());
    assert_eq!((img.width, img.height), (321, 123));
}

#[test]
fn horizontal_line_at_half_the_axis_is_at_mid_height() {
    let chart = two_line_chart();
    let r = chart.render().unwrap();
    assert_eq!((r.y.lo, r.y.hi), (0.0, 10.0), "axis 0..10");
    let img = decode(&chart.render_png().unwrap());
    let mid_x = r.plot.x + r.plot.w / 2;
    let rows = img.rows_with(mid_x, r.plot.y, r.plot.bottom(), PALETTE[0]);
    assert_eq!(rows.len(), 2, "a 2 px line: {rows:?}");
    let mid_y = r.plot.y + r.plot.h / 2;
    assert!(
        rows.iter().all(|&y| (y - mid_y).abs() <= 2),
        "line rows {rows:?}, plot mid-height {mid_y}"
    );
    // The second series (y = 10) is at the top of the plot area, in the second colour.
    let rows = img.rows_with(mid_x, r.plot.y, r.plot.bottom(), PALETTE[1]);
    assert!(!rows.is_empty() && rows.iter().all(|&y| (y - r.plot.y).abs() <= 2));
}

#[test]
fn line_chart_draws_grid_axes_title_and_legend() {
    let chart = two_line_chart();
    let r = chart.render().unwrap();
    let img = decode(&chart.render_png().unwrap());
    // Background is white, the axis is dark, the grid light.
    assert_eq!(img.at(0, 0), BACKGROUND);
    assert_eq!(img.at(r.plot.x - 1, r.plot.y + r.plot.h / 3), AXIS);
    assert_eq!(img.at(r.plot.x + r.plot.w / 3, r.plot.bottom()), AXIS);
    let grid_row = r.y_px(r.y.ticks[1]);
    assert_eq!(img.at(r.plot.x + 3, grid_row), GRID);
    // Title text somewhere in the top rows.
    let title_px = (0..24)
        .flat_map(|y| (0..900).map(move |x| (x, y)))
        .filter(|&(x, y)| img.at(x, y) == TEXT)
        .count();
    assert!(title_px > 50, "title pixels: {title_px}");
    // Both legend swatches above the plot area.
    for color in &PALETTE[..2] {
        let above = (0..r.plot.y)
            .flat_map(|y| (0..900).map(move |x| (x, y)))
            .filter(|&(x, y)| img.at(x, y) == *color)
            .count();
        assert!(above >= 12 * 4, "legend swatch pixels: {above}");
    }
}

#[test]
fn single_series_has_no_legend() {
    let mut chart = two_line_chart();
    chart.series.truncate(1);
    let r = chart.render().unwrap();
    // Above the plot area, leaving the rows the line's points reach into (it is at the top).
    let swatch = (0..r.plot.y - 3)
        .flat_map(|y| (0..900).map(move |x| (x, y)))
        .any(|(x, y)| r.canvas.get(x, y) == Some(PALETTE[0]));
    assert!(!swatch);
}

#[test]
fn nice_ticks_use_1_2_5_steps() {
    for (lo, hi, target) in [
        (0.0, 10.0, 5),
        (0.0, 37.3, 6),
        (-3.2, 812.0, 8),
        (0.001, 0.0042, 4),
        (1e9, 7.5e9, 5),
    ] {
        let axis = nice_axis(lo, hi, target).unwrap();
        let mantissa = axis.step / 10f64.powf(axis.step.log10().floor());
        assert!(
            [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-9),
            "step {} for {lo}..{hi}",
            axis.step
        );
        assert!(axis.lo <= lo && axis.hi >= hi);
        assert!(axis.ticks.len() >= 2 && axis.ticks.len() <= 2 * target + 2);
    }
    let axis = nice_axis(0.0, 10.0, 5).unwrap();
    assert_eq!(axis.ticks, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    assert_eq!(
        axis.labels(),
        vec!["0", "2", "4", "6", "8", "10"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    );
    let axis = nice_axis(0.0, 1.0, 5).unwrap();
    assert_eq!(axis.labels()[1], "0.2");
}

#[test]
fn degenerate_ranges_are_padded() {
    let axis = nice_axis(5.0, 5.0, 5).unwrap();
    assert!(axis.lo < 5.0 && axis.hi > 5.0);
    let axis = nice_axis(0.0, 0.0, 5).unwrap();
    assert!(axis.lo < 0.0 && axis.hi > 0.0);
    let mut chart = LineChart::new("one point", "x", "y");
    chart.series.push(Series::new("p", vec![(3.0, 7.0)]));
    let r = chart.render().unwrap();
    // The point is drawn as a square inside the plot area.
    let (px, py) = (r.x_px(3.0), r.y_px(7.0));
    assert!(r.plot.x <= px && px < r.plot.right() && r.plot.y <= py && py < r.plot.bottom());
    assert_eq!(r.canvas.get(px, py), Some(PALETTE[0]));
    assert_eq!(r.canvas.get(px + 2, py - 2), Some(PALETTE[0]));
    let mut chart = LineChart::new("flat", "x", "y");
    chart
        .series
        .push(Series::new("p", vec![(1.0, 2.0), (1.0, 2.0), (1.0, 2.0)]));
    assert!(chart.render_png().is_ok());
}

#[test]
fn non_finite_points_are_skipped_and_break_the_line() {
    let mut chart = LineChart::new("gaps", "x", "y");
    chart.series.push(Series::new(
        "s",
        vec![
            (0.0, 1.0),
            (1.0, f64::NAN),
            (2.0, 1.0),
            (f64::INFINITY, 3.0),
        ],
    ));
    let r = chart.render().unwrap();
    assert_eq!((r.x.lo, r.x.hi), (0.0, 2.0));
    // Between x=0 and x=2 the line is broken by the NaN: no series pixels at x=1.
    let col = r.x_px(1.0);
    assert!((r.plot.y..r.plot.bottom()).all(|y| r.canvas.get(col, y) != Some(PALETTE[0])));
    let mut chart = LineChart::new("all nan", "x", "y");
    chart
        .series
        .push(Series::new("s", vec![(f64::NAN, 1.0), (1.0, f64::NAN)]));
    assert_eq!(chart.render_png(), Err(PlotError::Empty));
}

#[test]
fn markers_draw_dashed_lines_and_labels() {
    let mut chart = two_line_chart();
    chart.markers.push((4.0, "relay killed".into()));
    chart.markers.push((f64::NAN, "ignored".into()));
    let r = chart.render().unwrap();
    let col = r.x_px(4.0);
    let rows = (r.plot.y..r.plot.bottom())
        .filter(|&y| r.canvas.get(col, y) == Some(MARKER))
        .count() as i64;
    assert!(
        rows > r.plot.h / 3 && rows < r.plot.h,
        "dashed: {rows} of {}",
        r.plot.h
    );
    let label_px = (r.plot.y..r.plot.y + 20)
        .flat_map(|y| (col..col + 80).map(move |x| (x, y)))
        .filter(|&(x, y)| r.canvas.get(x, y) == Some(MARKER_TEXT))
        .count();
    assert!(label_px > 20);
    // A marker beyond the data widens the x axis.
    chart.markers.push((25.0, "late".into()));
    assert!(chart.render().unwrap().x.hi >= 25.0);
}

#[test]
fn many_points_have_no_squares() {
    let mut chart = LineChart::new("dense", "x", "y");
    let points: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, 0.0)).collect();
    chart.series.push(Series::new("zero", points));
    chart.series.push(Series::new("one", vec![(0.0, 1.0)]));
    let r = chart.render().unwrap();
    let col = r.x_px(50.0);
    let rows = (r.plot.y..r.plot.bottom() + 3)
        .filter(|&y| r.canvas.get(col, y) == Some(PALETTE[0]))
        .count();
    assert_eq!(rows, 2, "a bare 2 px line, no 5 px square");
}

fn bar_chart() -> BarChart {
    BarChart {
        categories: vec!["eu".into(), "us".into(), "ap".into()],
        series: vec![
            ("tree".into(), vec![10.0, 5.0, 7.5]),
            ("mesh".into(), vec![5.0, 10.0, 0.0]),
        ],
        ..BarChart::new("Latency", "ms")
    }
}

fn bar_center(r: &Rendered, chart: &BarChart, category: usize, series: usize) -> i64 {
    let group_w = r.plot.w as f64 / chart.categories.len() as f64;
    let bar_w = group_w * 0.8 / chart.series.len() as f64;
    let x =
        r.plot.x as f64 + group_w * category as f64 + group_w * 0.1 + bar_w * (series as f64 + 0.5);
    x.round() as i64
}

#[test]
fn bar_of_10_is_twice_as_tall_as_bar_of_5() {
    let chart = bar_chart();
    let r = chart.render().unwrap();
    assert_eq!(r.y.lo, 0.0);
    let img = decode(&chart.render_png().unwrap());
    assert_eq!((img.width, img.height), (900, 500));
    let height = |cat: usize, ser: usize| {
        img.rows_with(
            bar_center(&r, &chart, cat, ser),
            r.plot.y,
            r.plot.bottom(),
            PALETTE[ser],
        )
        .len() as f64
    };
    let (tree_eu, tree_us, mesh_eu, mesh_us) =
        (height(0, 0), height(1, 0), height(0, 1), height(1, 1));
    assert!(tree_eu > 100.0, "tall bar: {tree_eu}");
    for (ten, five) in [(tree_eu, tree_us), (mesh_us, mesh_eu)] {
        let ratio = ten / five;
        assert!((ratio - 2.0).abs() < 0.05, "{ten} / {five} = {ratio}");
    }
    assert!((height(2, 0) / tree_eu - 0.75).abs() < 0.03);
    // A zero bar is at most the baseline row.
    assert!(height(2, 1) <= 1.0);
}

#[test]
fn bars_have_value_labels_above_them() {
    let chart = bar_chart();
    let r = chart.render().unwrap();
    let x = bar_center(&r, &chart, 0, 0);
    let top = r.y_px(10.0);
    let label_px = (top - 14..top)
        .flat_map(|y| (x - 10..x + 10).map(move |x| (x, y)))
        .filter(|&(x, y)| r.canvas.get(x, y) == Some(TEXT))
        .count();
    assert!(label_px > 10, "label pixels above the bar: {label_px}");
}

#[test]
fn negative_bars_go_down_from_zero() {
    let chart = BarChart {
        categories: vec!["a".into(), "b".into()],
        series: vec![("s".into(), vec![-4.0, 8.0])],
        ..BarChart::new("signed", "")
    };
    let r = chart.render().unwrap();
    assert!(r.y.lo <= -4.0 && r.y.hi >= 8.0);
    let zero = r.y_px(0.0);
    let x = bar_center(&r, &chart, 0, 0);
    assert_eq!(r.canvas.get(x, zero + 5), Some(PALETTE[0]));
    assert_ne!(r.canvas.get(x, zero - 5), Some(PALETTE[0]));
}

#[test]
fn bar_errors() {
    let mut chart = bar_chart();
    chart.series[1].1.pop();
    assert_eq!(
        chart.render_png(),
        Err(PlotError::LengthMismatch {
            series: "mesh".into(),
            expected: 3,
            actual: 2
        })
    );
    let mut chart = bar_chart();
    chart.series[0].1[2] = f64::NAN;
    assert_eq!(
        chart.render_png(),
        Err(PlotError::NonFinite {
            series: "tree".into(),
            index: 2
        })
    );
    let mut chart = bar_chart();
    chart.series[0].1[0] = f64::NEG_INFINITY;
    assert!(matches!(
        chart.render_png(),
        Err(PlotError::NonFinite { .. })
    ));
    assert_eq!(BarChart::new("t", "y").render_png(), Err(PlotError::Empty));
    let mut chart = bar_chart();
    chart.series.clear();
    assert_eq!(chart.render_png(), Err(PlotError::Empty));
    let mut chart = bar_chart();
    chart.categories.clear();
    assert_eq!(chart.render_png(), Err(PlotError::Empty));
}

#[test]
fn line_errors() {
    assert_eq!(
        LineChart::new("t", "x", "y").render_png(),
        Err(PlotError::Empty)
    );
    let mut chart = LineChart::new("t", "x", "y");
    chart.series.push(Series::new("none", vec![]));
    assert_eq!(chart.render_png(), Err(PlotError::Empty));
    let mut chart = two_line_chart();
    chart.series[0].points.push((-1e308, 1.0));
    chart.series[0].points.push((1e308, 1.0));
    assert_eq!(chart.render_png(), Err(PlotError::Range));
}

#[test]
fn sizes_outside_64_to_4096_are_rejected() {
    for (w, h) in [(63, 500), (900, 63), (4097, 500), (900, 4097), (0, 0)] {
        let mut chart = two_line_chart();
        chart.width = w;
        chart.height = h;
        assert_eq!(
            chart.render_png(),
            Err(PlotError::Size {
                width: w,
                height: h
            })
        );
        let mut bars = bar_chart();
        bars.width = w;
        bars.height = h;
        assert!(matches!(bars.render_png(), Err(PlotError::Size { .. })));
    }
    for (w, h) in [(64, 64), (64, 4096), (4096, 64)] {
        let mut chart = two_line_chart();
        chart.width = w;
        chart.height = h;
        assert_eq!(decode(&chart.render_png().unwrap()).width, w);
        let mut bars = bar_chart();
        bars.width = w;
        bars.height = h;
        assert_eq!(decode(&bars.render_png().unwrap()).height, h);
    }
}

#[test]
fn compact_values() {
    for (v, s) in [
        (0.0, "0"),
        (5.0, "5"),
        (5.5, "5.5"),
        (12.345, "12.3"),
        (0.1234, "0.123"),
        (999.0, "999"),
        (999.9, "1k"),
        (1234.0, "1.23k"),
        (12345.0, "12.3k"),
        (123456.0, "123k"),
        (2.5e6, "2.5M"),
        (-1500.0, "-1.5k"),
        (3e9, "3G"),
        (4.56e12, "4.56T"),
        (1.5e20, "1.5e20"),
        (0.00012, "1.2e-4"),
    ] {
        assert_eq!(compact(v), s, "compact({v})");
    }
}

#[test]
fn font_has_distinct_glyphs_for_printable_ascii() {
    assert_eq!(font::GLYPHS.len(), 95);
    for code in 33u8..=126 {
        let g = font::glyph(code as char);
        assert!(g.iter().any(|&col| col != 0), "{:?} is blank", code as char);
        assert!(
            g.iter().all(|&col| col < 0x80),
            "{:?} is 8 rows",
            code as char
        );
    }
    assert!(font::glyph(' ').iter().all(|&col| col == 0));
    assert_ne!(font::glyph('A'), font::glyph('B'));
    // Every printable glyph differs from every other.
    for a in 32u8..=126 {
        for b in a + 1..=126 {
            assert_ne!(
                font::glyph(a as char),
                font::glyph(b as char),
                "{:?} and {:?} look alike",
                a as char,
                b as char
            );
        }
    }
    // Outside printable ASCII: '?'.
    for c in ['é', '\n', '\u{7f}', '→', '\u{0}'] {
        assert_eq!(font::glyph(c), font::glyph('?'));
    }
    assert_eq!(font::text_width("", 1), 0);
    assert_eq!(font::text_width("ab", 1), 11);
    assert_eq!(font::text_width("ab", 2), 22);
}

#[test]
fn text_is_drawn_and_title_is_scaled_2x() {
    let mut c = Canvas::new(100, 40, BACKGROUND);
    c.text(2, 2, "A", 1, TEXT);
    c.text(20, 2, "A", 2, TEXT);
    let count = |x0: i64, x1: i64| {
        (0..40)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| c.get(x, y) == Some(TEXT))
            .count()
    };
    let small = count(0, 15);
    assert!(small > 10);
    assert_eq!(count(15, 100), small * 4);
    // Text running off any edge is clipped, not a panic.
    c.text(-30, -3, "clipped text", 2, TEXT);
    c.text(95, 38, "clipped", 3, TEXT);
}

#[test]
fn fuzz_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let special = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        -0.0,
        0.0,
        1e300,
        -1e300,
        1e15,
        1.0,
    ];
    let value = |rng: &mut rand::rngs::StdRng| -> f64 {
        match rng.random_range(0..4) {
            0 => special[rng.random_range(0..special.len())],
            1 => rng.random_range(-1e6..1e6),
            2 => rng.random_range(-2.0..2.0) * 10f64.powi(rng.random_range(-300..300)),
            _ => rng.random_range(0..5) as f64,
        }
    };
    let text = |rng: &mut rand::rngs::StdRng| -> String {
        let n = rng.random_range(0..60);
        (0..n)
            .map(|_| match rng.random_range(0..10) {
                0 => char::from_u32(rng.random_range(0..0x11000)).unwrap_or('x'),
                _ => rng.random_range(32u8..127) as char,
            })
            .collect()
    };
    let (mut ok, mut err) = (0, 0);
    for _ in 0..150 {
        let size = |rng: &mut rand::rngs::StdRng| {
            if rng.random_range(0..10) == 0 {
                // Outside the accepted sizes: rejected before anything is drawn.
                if rng.random() {
                    rng.random_range(0..MIN_SIZE)
                } else {
                    rng.random_range(MAX_SIZE + 1..5000)
                }
            } else {
                rng.random_range(64..260)
            }
        };
        let mut line = LineChart::new(text(&mut rng), text(&mut rng), text(&mut rng));
        line.width = size(&mut rng);
        line.height = size(&mut rng);
        line.y_min_zero = rng.random();
        for _ in 0..rng.random_range(0..12) {
            let points = (0..rng.random_range(0..50))
                .map(|_| (value(&mut rng), value(&mut rng)))
                .collect();
            line.series.push(Series::new(text(&mut rng), points));
        }
        for _ in 0..rng.random_range(0..4) {
            line.markers.push((value(&mut rng), text(&mut rng)));
        }
        match line.render_png() {
            Ok(png) => {
                assert_eq!(decode(&png).width, line.width);
                ok += 1;
            }
            Err(_) => err += 1,
        }

        let mut bars = BarChart::new(text(&mut rng), text(&mut rng));
        bars.width = size(&mut rng);
        bars.height = size(&mut rng);
        let ncat = rng.random_range(0..8);
        bars.categories = (0..ncat).map(|_| text(&mut rng)).collect();
        for _ in 0..rng.random_range(0..10) {
            let n = if rng.random_range(0..10) == 0 {
                rng.random_range(0..10)
            } else {
                ncat
            };
            let values = (0..n)
                .map(|_| {
                    if rng.random_range(0..3) == 0 {
                        value(&mut rng)
                    } else {
                        rng.random_range(-100.0..1000.0)
                    }
                })
                .collect();
            bars.series.push((text(&mut rng), values));
        }
        match bars.render_png() {
            Ok(png) => {
                assert_eq!(decode(&png).height, bars.height);
                ok += 1;
            }
            Err(_) => err += 1,
        }
    }
    assert!(ok > 20 && err > 20, "ok {ok}, err {err}");
}
