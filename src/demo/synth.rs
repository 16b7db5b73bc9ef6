//! Synthetic gate frames: a QR or Grid Matrix code shown on a phone, seen by a 1280×720 gate
//! camera at an angle, with blur, sensor noise, ceiling-light glare and screen moiré —
//! generated from a fixed seed, so tests, benchmarks and the demo see the same frames
//! everywhere.

use image::{GrayImage, Luma};
use rand::{Rng, SeedableRng};

/// Frame size of the synthetic gate camera.
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 720;

/// How one frame was made (for reports and debugging).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameParams {
    /// Tilt of the phone away from the camera, degrees (0–30).
    pub tilt_deg: f64,
    /// In-plane rotation, degrees.
    pub rotation_deg: f64,
    /// Side of the code on the frame, pixels.
    pub code_px: f64,
    pub blur_sigma: f32,
    pub noise_sigma: f64,
    pub glare: f64,
    pub moire: f64,
}

/// Deterministic generator of gate frames.
#[derive(Debug)]
pub struct GateFrames {
    rng: rand::rngs::StdRng,
    symbology: crate::decode::Symbology,
}

impl GateFrames {
    /// QR frames.
    pub fn new(seed: u64) -> GateFrames {
        GateFrames {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            symbology: crate::decode::Symbology::Qr,
        }
    }

    /// Grid Matrix frames (GB/T 27766, the encoder's default level): the symbol with its
    /// 6-module quiet zone spans 255–612 px, 2.5–6 px a module for a YM1 dynamic code (V7),
    /// less where a turned symbol would not fit the frame.
    pub fn grid_matrix(seed: u64) -> GateFrames {
        GateFrames {
            symbology: crate::decode::Symbology::GridMatrix,
            ..GateFrames::new(seed)
        }
    }

    /// A frame showing `text`, with randomly drawn (but seeded) conditions.
    pub fn frame(&mut self, text: &str) -> (GrayImage, FrameParams) {
        let r = &mut self.rng;
        let params = FrameParams {
            tilt_deg: r.gen_range(0.0..30.0),
            rotation_deg: r.gen_range(-180.0..180.0),
            code_px: match self.symbology {
                crate::decode::Symbology::Qr => r.gen_range(170.0..420.0),
                crate::decode::Symbology::GridMatrix => r.gen_range(255.0..612.0),
            },
            // Grid Matrix: σ ≤ 1.2 px, the camera the Grid Matrix target is set for (issue 14).
            blur_sigma: match self.symbology {
                crate::decode::Symbology::Qr => r.gen_range(0.0..1.6),
                crate::decode::Symbology::GridMatrix => r.gen_range(0.0..1.2),
            },
            noise_sigma: r.gen_range(0.0..12.0),
            glare: r.gen_range(0.0..0.9),
            moire: r.gen_range(0.0..0.2),
        };
        let mut params = params;
        if self.symbology == crate::decode::Symbology::GridMatrix {
            // A large symbol turned towards 45° must still fit the frame's 720 px height.
            let rot = params.rotation_deg.to_radians();
            params.code_px = params
                .code_px
                .min(640.0 / (rot.cos().abs() + rot.sin().abs()));
        }
        let img = self.render(text, &params);
        (img, params)
    }

    /// Renders a frame with the given conditions.
    pub fn render(&mut self, text: &str, p: &FrameParams) -> GrayImage {
        let code = match self.symbology {
            crate::decode::Symbology::Qr => crate::render::render(text, 4),
            crate::decode::Symbology::GridMatrix => crate::render::grid_matrix(text, 4),
        }
        .unwrap_or_else(|_| GrayImage::new(29, 29));
        // The phone screen: the code with a margin, slightly grey (backlight), on a dark body.
        let screen = {
            let margin = code.width() / 6;
            let side = code.width() + 2 * margin;
            let mut s = GrayImage::from_pixel(side, side, Luma([232]));
            for (x, y, px) in code.enumerate_pixels() {
                let v = if px.0[0] < 128 { 28 } else { 232 };
                s.put_pixel(x + margin, y + margin, Luma([v]));
            }
            s
        };
        let scale_to_code = p.code_px / f64::from(code.width());
        let half = f64::from(screen.width()) * scale_to_code / 2.0;
        let (cx, cy) = (
            f64::from(WIDTH) / 2.0 + self.rng.gen_range(-200.0..200.0),
            f64::from(HEIGHT) / 2.0 + self.rng.gen_range(-60.0..60.0),
        );
        // Corners of the screen in the frame: rotate in plane, then foreshorten one side (tilt).
        let rot = p.rotation_deg.to_radians();
        let squeeze = p.tilt_deg.to_radians().cos();
        let persp = 1.0 + p.tilt_deg.to_radians().sin() * 0.35;
        let corners: Vec<(f64, f64)> = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)]
            .iter()
            .map(|&(u, v): &(f64, f64)| {
                let x = u * half * squeeze;
                // the far edge looks shorter than the near one
                let k = if u > 0.0 { 1.0 / persp } else { persp };
                let y = v * half * k;
                (
                    cx + x * rot.cos() - y * rot.sin(),
                    cy + x * rot.sin() + y * rot.cos(),
                )
            })
            .collect();
        let s = f64::from(screen.width());
        let src = [(0.0, 0.0), (s, 0.0), (s, s), (0.0, s)];
        let h = homography(&corners, &src);

        let mut frame = GrayImage::new(WIDTH, HEIGHT);
        let (gx, gy) = (
            self.rng.gen_range(0.0..f64::from(WIDTH)),
            self.rng.gen_range(0.0..f64::from(HEIGHT)),
        );
        let (mfx, mfy) = (
            self.rng.gen_range(0.15..0.45),
            self.rng.gen_range(0.15..0.45),
        );
        for y in 0..HEIGHT {
            for x in 0..WIDTH {
                let (fx, fy) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
                // background: a floor/wall gradient
                let mut v = 70.0 + 50.0 * fx / f64::from(WIDTH) + 20.0 * fy / f64::from(HEIGHT);
                if let Some((sx, sy)) = h.as_ref().and_then(|h| apply(h, fx, fy)) {
                    if sx >= 0.0 && sy >= 0.0 && sx < s - 1.0 && sy < s - 1.0 {
                        let screen_v = bilinear(&screen, sx, sy);
                        // moiré: interference of the screen's pixel grid with the sensor's
                        let m =
                            1.0 + p.moire * ((mfx * fx + mfy * fy) * std::f64::consts::TAU).sin();
                        v = screen_v * m;
                    }
                }
                // glare: a soft bright spot from a ceiling light
                let d2 = ((fx - gx).powi(2) + (fy - gy).powi(2)) / (2.0 * 180.0f64.powi(2));
                v += p.glare * 255.0 * (-d2).exp();
                frame.put_pixel(x, y, Luma([v.clamp(0.0, 255.0) as u8]));
            }
        }
        let mut frame = if p.blur_sigma > 0.05 {
            image::imageops::blur(&frame, p.blur_sigma)
        } else {
            frame
        };
        if p.noise_sigma > 0.0 {
            for px in frame.pixels_mut() {
                // Box–Muller from two uniforms.
                let (u1, u2): (f64, f64) = (self.rng.gen_range(1e-9..1.0), self.rng.gen());
                let n = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                px.0[0] = (f64::from(px.0[0]) + n * p.noise_sigma).clamp(0.0, 255.0) as u8;
            }
        }
        frame
    }
}

fn bilinear(img: &GrayImage, x: f64, y: f64) -> f64 {
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (dx, dy) = (x - x.floor(), y - y.floor());
    let p = |xx: u32, yy: u32| f64::from(img.get_pixel(xx, yy).0[0]);
    p(x0, y0) * (1.0 - dx) * (1.0 - dy)
        + p(x0 + 1, y0) * dx * (1.0 - dy)
        + p(x0, y0 + 1) * (1.0 - dx) * dy
        + p(x0 + 1, y0 + 1) * dx * dy
}

/// The homography mapping each `from` point to the matching `to` point (None if degenerate).
fn homography(from: &[(f64, f64)], to: &[(f64, f64)]) -> Option<[f64; 9]> {
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let (x, y) = from[i];
        let (u, v) = to[i];
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    // The detector's 8×8 solver (Gaussian elimination, partial pivoting; last column = rhs).
    let h8 = crate::gridmatrix::detect::solve8(a)?;
    let mut h = [0f64; 9];
    h[..8].copy_from_slice(&h8);
    h[8] = 1.0;
    Some(h)
}

fn apply(h: &[f64; 9], x: f64, y: f64) -> Option<(f64, f64)> {
    let w = h[6] * x + h[7] * y + h[8];
    (w.abs() > 1e-12).then(|| {
        (
            (h[0] * x + h[1] * y + h[2]) / w,
            (h[3] * x + h[4] * y + h[5]) / w,
        )
    })
}

/// Hostile frames for the decoder (1280×720): sheets tiled with QR finder patterns at 2, 3 and
/// 4 px a module (each finder pairs with its neighbours into plausible symbols), a dense
/// checkerboard, full-contrast noise, and Grid Matrix-like sheets — 6×6-module macromodules
/// whose frames alternate by layer around the centre, as a symbol's do, with random insides —
/// at 2 and 3 px a module; a tiled floor and a woven fabric (perfect lattices of saddles);
/// with the name of each.
pub fn adversarial_frames() -> Vec<(&'static str, GrayImage)> {
    let finder_sheet = |m: u32| {
        let mut img = GrayImage::from_pixel(WIDTH, HEIGHT, Luma([255]));
        let step = 9 * m;
        for ty in 0..HEIGHT / step {
            for tx in 0..WIDTH / step {
                let (x0, y0) = (tx * step + m, ty * step + m);
                for dy in 0..7 * m {
                    for dx in 0..7 * m {
                        let (mx, my) = (dx / m, dy / m);
                        let ring = mx.min(my).min(6 - mx).min(6 - my);
                        if ring != 1 {
                            img.put_pixel(x0 + dx, y0 + dy, Luma([0]));
                        }
                    }
                }
            }
        }
        img
    };
    let checker = GrayImage::from_fn(WIDTH, HEIGHT, |x, y| {
        Luma([if (x / 2 + y / 2) % 2 == 0 { 0 } else { 255 }])
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xBAD5EED);
    let noise = GrayImage::from_fn(WIDTH, HEIGHT, |_, _| {
        Luma([if rng.gen_bool(0.5) { 0 } else { 255 }])
    });
    let macromodules = |m: u32, seed: u64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let side = 6 * m;
        let (cols, rows) = (WIDTH / side, HEIGHT / side);
        let mut img = GrayImage::from_pixel(WIDTH, HEIGHT, Luma([255]));
        for j in 0..rows {
            for i in 0..cols {
                let layer = (i as i64 - cols as i64 / 2)
                    .abs()
                    .max((j as i64 - rows as i64 / 2).abs());
                let frame_dark = layer % 2 == 0;
                let inside: Vec<bool> = (0..16).map(|_| rng.gen_bool(0.5)).collect();
                for my in 0..6 {
                    for mx in 0..6 {
                        let on_frame = mx == 0 || my == 0 || mx == 5 || my == 5;
                        let dark = if on_frame {
                            frame_dark
                        } else {
                            inside[((my - 1) * 4 + (mx - 1)) as usize]
                        };
                        if dark {
                            for dy in 0..m {
                                for dx in 0..m {
                                    img.put_pixel(
                                        i * side + mx * m + dx,
                                        j * side + my * m + dy,
                                        Luma([0]),
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        img
    };
    // A tiled floor or wall seen by the gate's camera: a checkerboard of 18 px tiles (a
    // macromodule at 3 px a module) turned 25° — every tile corner is the saddle the Grid
    // Matrix detector seeds from, and the lattice is perfect.
    let tiles = {
        let (c, s) = (25f64.to_radians().cos(), 25f64.to_radians().sin());
        GrayImage::from_fn(WIDTH, HEIGHT, |x, y| {
            let (x, y) = (f64::from(x), f64::from(y));
            let (u, v) = (x * c + y * s, -x * s + y * c);
            let dark = ((u / 18.0).floor() as i64 + (v / 18.0).floor() as i64) % 2 == 0;
            Luma([if dark { 40 } else { 215 }])
        })
    };
    // Woven fabric: a smooth sin·sin weave of 24 px (saddles between every warp and weft
    // crossing) turned 10°, with sensor noise.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xFAB1C);
    let fabric = {
        let (c, s) = (10f64.to_radians().cos(), 10f64.to_radians().sin());
        let k = std::f64::consts::PI / 24.0;
        GrayImage::from_fn(WIDTH, HEIGHT, |x, y| {
            let (x, y) = (f64::from(x), f64::from(y));
            let (u, v) = (x * c + y * s, -x * s + y * c);
            let weave = (u * k).sin() * (v * k).sin();
            let noise: f64 = rng.gen_range(-12.0..12.0);
            Luma([(128.0 + 100.0 * weave + noise).clamp(0.0, 255.0) as u8])
        })
    };
    vec![
        ("finders_2px", finder_sheet(2)),
        ("finders_3px", finder_sheet(3)),
        ("finders_4px", finder_sheet(4)),
        ("checkerboard_2px", checker),
        ("noise", noise),
        ("macromodules_2px", macromodules(2, 0x6D61_6372)),
        ("macromodules_3px", macromodules(3, 0x6F6D_6F64)),
        ("tiles_18px_turned", tiles),
        ("fabric_weave", fabric),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homography_maps_corners() {
        let from = [(10.0, 10.0), (110.0, 20.0), (100.0, 120.0), (5.0, 90.0)];
        let to = [(0.0, 0.0), (50.0, 0.0), (50.0, 50.0), (0.0, 50.0)];
        let h = homography(&from, &to).expect("h");
        for (f, t) in from.iter().zip(&to) {
            let (u, v) = apply(&h, f.0, f.1).expect("apply");
            assert!((u - t.0).abs() < 1e-6 && (v - t.1).abs() < 1e-6);
        }
    }

    #[test]
    fn frames_are_deterministic_for_a_seed() {
        let a = GateFrames::new(7).frame("YM1:ABC").0;
        let b = GateFrames::new(7).frame("YM1:ABC").0;
        assert_eq!(a.dimensions(), (WIDTH, HEIGHT));
        assert!(a == b);
        let c = GateFrames::new(8).frame("YM1:ABC").0;
        assert!(a != c);
        let g = GateFrames::grid_matrix(7).frame("YM1:ABC");
        assert!(g.0 == GateFrames::grid_matrix(7).frame("YM1:ABC").0);
        assert!(g.0 != a, "a Grid Matrix frame differs from the QR one");
        assert!(
            g.1.code_px
                * (g.1.rotation_deg.to_radians().cos().abs()
                    + g.1.rotation_deg.to_radians().sin().abs())
                <= 640.0 + 1e-6
        );
    }
}
