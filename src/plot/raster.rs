//! The RGB8 raster the charts are drawn on: clipped pixels, rectangles, 2 px lines, dashed
//! lines and bitmap text.

use super::font;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// A pixel rectangle: `x..x + w`, `y..y + h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left column.
    pub x: i64,
    /// Top row.
    pub y: i64,
    /// Width in pixels (at least 1 for a laid-out plot area).
    pub w: i64,
    /// Height in pixels (at least 1 for a laid-out plot area).
    pub h: i64,
}

impl Rect {
    /// One past the right column.
    pub fn right(&self) -> i64 {
        self.x + self.w
    }

    /// One past the bottom row.
    pub fn bottom(&self) -> i64 {
        self.y + self.h
    }
}

/// A `width` x `height` RGB8 image, row-major, every drawing call clipped to it.
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes, row-major RGB.
    pub pixels: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: Rgb) -> Canvas {
        Canvas {
            width,
            height,
            pixels: background.repeat(width as usize * height as usize),
        }
    }

    /// The colour at (`x`, `y`), or `None` outside the canvas.
    #[cfg(test)]
    pub fn get(&self, x: i64, y: i64) -> Option<Rgb> {
        let i = self.index(x, y)?;
        Some([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }

    fn index(&self, x: i64, y: i64) -> Option<usize> {
        if x < 0 || y < 0 || x >= i64::from(self.width) || y >= i64::from(self.height) {
            return None;
        }
        Some((y as usize * self.width as usize + x as usize) * 3)
    }

    /// Sets one pixel; outside the canvas nothing happens.
    pub fn set(&mut self, x: i64, y: i64, color: Rgb) {
        if let Some(i) = self.index(x, y) {
            self.pixels[i..i + 3].copy_from_slice(&color);
        }
    }

    /// Fills `rect`, clipped to the canvas.
    pub fn fill_rect(&mut self, rect: Rect, color: Rgb) {
        let x0 = rect.x.max(0);
        let y0 = rect.y.max(0);
        let x1 = rect.right().min(i64::from(self.width));
        let y1 = rect.bottom().min(i64::from(self.height));
        for y in y0..y1 {
            for x in x0..x1 {
                self.set(x, y, color);
            }
        }
    }

    /// A horizontal 1 px line from `x0` to `x1` inclusive, in either order.
    pub fn hline(&mut self, x0: i64, x1: i64, y: i64, color: Rgb) {
        let (a, b) = (x0.min(x1), x0.max(x1));
        self.fill_rect(
            Rect {
                x: a,
                y,
                w: b - a + 1,
                h: 1,
            },
            color,
        );
    }

    /// A vertical 1 px line from `y0` to `y1` inclusive, in either order.
    pub fn vline(&mut self, x: i64, y0: i64, y1: i64, color: Rgb) {
        let (a, b) = (y0.min(y1), y0.max(y1));
        self.fill_rect(
            Rect {
                x,
                y: a,
                w: 1,
                h: b - a + 1,
            },
            color,
        );
    }

    /// A vertical dashed 1 px line: `on` pixels drawn, `off` skipped, from `y0` down to `y1`.
    pub fn dashed_vline(&mut self, x: i64, y0: i64, y1: i64, on: i64, off: i64, color: Rgb) {
        let (a, b) = (y0.min(y1), y0.max(y1));
        let period = (on + off).max(1);
        for y in a.max(0)..=b.min(i64::from(self.height)) {
            if (y - a) % period < on {
                self.set(x, y, color);
            }
        }
    }

    /// A line 2 px wide (Bresenham, each step a 2x2 square) from `from` to `to`, clipped to
    /// `clip` (widened by a pixel) first so that far-away endpoints cost nothing.
    pub fn thick_line(&mut self, from: (i64, i64), to: (i64, i64), clip: Rect, color: Rgb) {
        let Some(((mut x0, mut y0), (x1, y1))) = clip_line(from, to, clip) else {
            return;
        };
        let dx = (x1 - x0).abs();
        let dy = -(y1 - y0).abs();
        let sx = if x0 < x1 { 1 } else { -1 };
        let sy = if y0 < y1 { 1 } else { -1 };
        let mut err = dx + dy;
        loop {
            self.fill_rect(
                Rect {
                    x: x0,
                    y: y0,
                    w: 2,
                    h: 2,
                },
                color,
            );
            if x0 == x1 && y0 == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x0 += sx;
            }
            if e2 <= dx {
                err += dx;
                y0 += sy;
            }
        }
    }

    /// Draws `text` with its top-left corner at (`x`, `y`), each font pixel a `scale` x `scale`
    /// square. Characters outside printable ASCII draw as `'?'`.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, color: Rgb) {
        let s = i64::from(scale.max(1));
        let advance = i64::from(font::ADVANCE) * s;
        let mut cx = x;
        for c in text.chars() {
            if cx >= i64::from(self.width) {
                break;
            }
            if cx + advance > 0 {
                let g = font::glyph(c);
                for col in 0..font::GLYPH_WIDTH {
                    for row in 0..font::GLYPH_HEIGHT {
                        if font::pixel(g, col, row) {
                            self.fill_rect(
                                Rect {
                                    x: cx + i64::from(col) * s,
                                    y: y + i64::from(row) * s,
                                    w: s,
                                    h: s,
                                },
                                color,
                            );
                        }
                    }
                }
            }
            cx += advance;
        }
    }
}

/// Cohen-Sutherland clipping of a segment to the inclusive pixel box of `clip` (widened by a
/// pixel so the 2 px pen still reaches the edge). `None` when nothing of it is inside.
fn clip_line(from: (i64, i64), to: (i64, i64), clip: Rect) -> Option<((i64, i64), (i64, i64))> {
    let xmin = (clip.x - 1) as f64;
    let ymin = (clip.y - 1) as f64;
    let xmax = clip.right() as f64;
    let ymax = clip.bottom() as f64;
    let code = |x: f64, y: f64| -> u8 {
        let mut c = 0;
        if x < xmin {
            c |= 1;
        } else if x > xmax {
            c |= 2;
        }
        if y < ymin {
            c |= 4;
        } else if y > ymax {
            c |= 8;
        }
        c
    };
    let (mut x0, mut y0) = (from.0 as f64, from.1 as f64);
    let (mut x1, mut y1) = (to.0 as f64, to.1 as f64);
    let mut c0 = code(x0, y0);
    let mut c1 = code(x1, y1);
    // Each pass moves one endpoint onto a clip edge; four edges bound the passes.
    for _ in 0..8 {
        if c0 | c1 == 0 {
            return Some((
                (x0.round() as i64, y0.round() as i64),
                (x1.round() as i64, y1.round() as i64),
            ));
        }
        if c0 & c1 != 0 {
            return None;
        }
        let out = if c0 != 0 { c0 } else { c1 };
        let (x, y) = if out & 8 != 0 {
            (x0 + (x1 - x0) * (ymax - y0) / (y1 - y0), ymax)
        } else if out & 4 != 0 {
            (x0 + (x1 - x0) * (ymin - y0) / (y1 - y0), ymin)
        } else if out & 2 != 0 {
            (xmax, y0 + (y1 - y0) * (xmax - x0) / (x1 - x0))
        } else {
            (xmin, y0 + (y1 - y0) * (xmin - x0) / (x1 - x0))
        };
        if out == c0 {
            (x0, y0) = (x, y);
            c0 = code(x0, y0);
        } else {
            (x1, y1) = (x, y);
            c1 = code(x1, y1);
        }
    }
    None
}
