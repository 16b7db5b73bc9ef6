//! `yima-gate keygen` and `yima-gate mint`: key pairs and codes made the way the platform
//! makes them — for tests, audits, demos and the offline trust path. Platform side: not in
//! the gate build.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::ValueEnum;

use super::parse_rfc3339;
use crate::verification::code::{self, Claims};
use crate::verification::keys::{Alg, KeyPair, Kid};
use crate::verification::verdict::{AccessMode, CodeKind};

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Signature or MAC algorithm.
    #[arg(long, value_enum)]
    alg: AlgArg,
    /// Key id (text, 1–16 bytes).
    #[arg(long)]
    kid: String,
    /// Directory for `KID.key.json` and `KID.trust.json` (created 0700).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Start of validity (RFC 3339; default now).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    not_before: Option<i64>,
    /// Days of validity.
    #[arg(long, default_value_t = 365)]
    days: i64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AlgArg {
    Ed25519,
    Es256,
    Sm2,
    Hmac,
}

impl From<AlgArg> for Alg {
    fn from(a: AlgArg) -> Alg {
        match a {
            AlgArg::Ed25519 => Alg::EdDSA,
            AlgArg::Es256 => Alg::ES256,
            AlgArg::Sm2 => Alg::SM2,
            AlgArg::Hmac => Alg::HMAC256,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Dynamic,
    Static,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Fused,
    Business,
    Independent,
}

#[derive(Debug, clap::Args)]
/// Arguments of `mint`.
pub struct MintArgs {
    /// Private key file written by `keygen`.
    #[arg(long)]
    key: PathBuf,
    #[arg(long, value_enum)]
    kind: KindArg,
    /// Service / application code (应用编码).
    #[arg(long)]
    service: String,
    /// Scenes where the code is valid (repeat; none = every scene of the service).
    #[arg(long = "scene")]
    scenes: Vec<String>,
    /// Pseudonymous subject token (default: random). Never an ID number, phone or name.
    #[arg(long)]
    subject: Option<String>,
    /// Issue time (RFC 3339; default now).
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339)]
    at: Option<i64>,
    /// Lifetime in seconds (default: 60 for dynamic, 5 years for static).
    #[arg(long)]
    ttl: Option<i64>,
    #[arg(long, default_value = "HLJ-YMTB")]
    issuer: String,
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Business codes carried by a fused code (repeat).
    #[arg(long = "biz")]
    business_codes: Vec<String>,
    /// Static codes: resource catalogue code.
    #[arg(long)]
    cat: Option<String>,
    /// Static codes: serial.
    #[arg(long)]
    sn: Option<String>,
    /// Static codes: version.
    #[arg(long)]
    ver: Option<u64>,
    /// Also write the code as a PNG (in `--symbology`).
    #[arg(long)]
    png: Option<PathBuf>,
    /// The symbology of `--png`: Grid Matrix (GB/T 27766, the standard's code system, at
    /// error-correction level 3) or QR (level M).
    #[arg(long, value_enum, default_value = "qr", requires = "png")]
    symbology: SymbologyArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SymbologyArg {
    Qr,
    #[value(name = "gridmatrix", alias = "grid-matrix")]
    GridMatrix,
}

/// Runs `keygen`.
pub fn keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    keygen_inner(a.alg.into(), &a.kid, &a.out, a.not_before, a.days)
}

fn keygen_inner(
    alg: Alg,
    kid: &str,
    out: &Path,
    not_before: Option<i64>,
    days: i64,
) -> anyhow::Result<ExitCode> {
    if !(1..=36500).contains(&days) {
        bail!("--days must be 1..=36500");
    }
    let kid = Kid::new(kid.as_bytes().to_vec())?;
    let nb = match not_before {
        Some(s) => s,
        None => crate::clock::wall_clock_ms() / 1000,
    };
    let pair = KeyPair::generate(alg, kid, nb, nb + days * 86_400);
    crate::files::create_private_dir(out).with_context(|| format!("creating {}", out.display()))?;
    let name = sanitize(&String::from_utf8_lossy(pair.kid.as_bytes()));
    let key_path = out.join(format!("{name}.key.json"));
    let trust_path = out.join(format!("{name}.trust.json"));
    crate::files::write_durable(&key_path, pair.to_json().as_bytes(), 0o600)
        .with_context(|| format!("writing {}", key_path.display()))?;
    let entry = serde_json::to_string_pretty(&pair.trusted_key().to_entry())?;
    let trust_mode = if alg.is_mac() { 0o600 } else { 0o644 };
    crate::files::write_durable(&trust_path, entry.as_bytes(), trust_mode)
        .with_context(|| format!("writing {}", trust_path.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "kid": pair.kid.to_hex(),
            "alg": alg.name(),
            "key": key_path.display().to_string(),
            "trust": trust_path.display().to_string(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Runs `mint`.
pub fn mint(a: MintArgs) -> anyhow::Result<ExitCode> {
    let pair = crate::local_trust::load_key_pair(&a.key)?;
    let kind = match a.kind {
        KindArg::Dynamic => CodeKind::Dynamic,
        KindArg::Static => CodeKind::Static,
    };
    if kind == CodeKind::Static && (a.cat.is_none() || a.sn.is_none()) {
        bail!("static codes need --cat and --sn");
    }
    let iat = match a.at {
        Some(s) => s,
        None => crate::clock::wall_clock_ms() / 1000,
    };
    let ttl = a.ttl.unwrap_or(match kind {
        CodeKind::Dynamic => crate::verification::trust::DEFAULT_REFRESH_S,
        CodeKind::Static => 5 * 365 * 86_400,
    });
    let mut cti = vec![0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut cti);
    let sub = match &a.subject {
        Some(s) => s.as_bytes().to_vec(),
        None => {
            let mut s = vec![0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
            s
        }
    };
    let claims = Claims {
        iss: a.issuer,
        sub,
        exp: iat + ttl,
        nbf: None,
        iat,
        cti,
        kind,
        service: a.service,
        scenes: (!a.scenes.is_empty()).then_some(a.scenes),
        mode: a.mode.map(|m| match m {
            ModeArg::Fused => AccessMode::Fused,
            ModeArg::Business => AccessMode::Business,
            ModeArg::Independent => AccessMode::Independent,
        }),
        business_codes: a.business_codes,
        catalogue: a.cat,
        serial: a.sn,
        version: a.ver,
    };
    let text = code::mint(&pair.signing, &pair.kid, &claims);
    if let Some(png) = &a.png {
        let img = match a.symbology {
            SymbologyArg::Qr => crate::render::render(&text, 8)?,
            // 6 px a module: a YM1 dynamic code (version 7, 90 modules + quiet zone) is 612 px.
            SymbologyArg::GridMatrix => crate::render::grid_matrix(&text, 6)?,
        };
        crate::render::save_png(&img, png)?;
    }
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
