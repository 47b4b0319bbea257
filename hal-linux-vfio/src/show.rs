//! Identify data as the `identify` tool prints it: the fields in the order
//! and under the names of nvme-cli's `id-ctrl` and `id-ns`, as text
//! (`name : value`) or as JSON with nvme-cli's field names and value types
//! (numbers; 128-bit counts as decimal strings; identifiers as strings).

use nvme_nostd::spec::identify::{IdentifyController, IdentifyNamespace, PowerStateDescriptor};
use serde_json::{Map, Value as Json};

/// One field's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A number, printed in decimal.
    Dec(u64),
    /// A number, printed in hexadecimal in the text (`0x1b36`; 0 as `0`).
    Hex(u64),
    /// A 128-bit count: decimal in the text, a decimal string in JSON.
    Big(u128),
    /// Text, as the controller reported it (up to its first NUL).
    Text(String),
    /// A number in JSON, shown as `text`.
    Shown {
        /// The JSON number.
        json: u64,
        /// What the text shows.
        text: String,
    },
}

/// A named field.
pub type Field = (&'static str, Value);

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Dec(v) => v.to_string(),
            Value::Hex(0) => "0".into(),
            Value::Hex(v) => format!("{v:#x}"),
            Value::Big(v) => v.to_string(),
            Value::Text(s) => s.clone(),
            Value::Shown { text, .. } => text.clone(),
        }
    }

    fn json(&self) -> Json {
        match self {
            Value::Dec(v) | Value::Hex(v) | Value::Shown { json: v, .. } => Json::from(*v),
            Value::Big(v) => Json::from(v.to_string()),
            Value::Text(s) => Json::from(s.clone()),
        }
    }
}

fn text(bytes: &[u8]) -> Value {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Value::Text(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid(b: &[u8; 16]) -> String {
    let h = hex_bytes(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn big(b: &[u8; 16]) -> Value {
    Value::Big(u128::from_le_bytes(*b))
}

/// Identify Controller's fields, nvme-cli's `id-ctrl` order.
pub fn controller_fields(id: &IdentifyController) -> Vec<Field> {
    use Value::{Dec, Hex};
    let ieee = u64::from(id.ieee[0]) | u64::from(id.ieee[1]) << 8 | u64::from(id.ieee[2]) << 16;
    vec![
        ("vid", Hex(id.vid.into())),
        ("ssvid", Hex(id.ssvid.into())),
        ("sn", text(&id.sn)),
        ("mn", text(&id.mn)),
        ("fr", text(&id.fr)),
        ("rab", Dec(id.rab.into())),
        ("ieee", Value::Shown { json: ieee, text: format!("{ieee:06x}") }),
        ("cmic", Hex(id.cmic.into_bits().into())),
        ("mdts", Dec(id.mdts.into())),
        ("cntlid", Hex(id.cntlid.into())),
        ("ver", Hex(id.ver.into())),
        ("rtd3r", Hex(id.rtd3r.into())),
        ("rtd3e", Hex(id.rtd3e.into())),
        ("oaes", Hex(id.oaes.into_bits().into())),
        ("ctratt", Hex(id.ctratt.into_bits().into())),
        ("rrls", Hex(id.rrls.into())),
        ("cntrltype", Dec(id.cntrltype.into())),
        ("fguid", Value::Text(uuid(&id.fguid))),
        ("crdt1", Dec(id.crdt1.into())),
        ("crdt2", Dec(id.crdt2.into())),
        ("crdt3", Dec(id.crdt3.into())),
        ("nvmsr", Dec(id.nvmsr.into())),
        ("vwci", Dec(id.vwci.into())),
        ("mec", Dec(id.mec.into())),
        ("oacs", Hex(id.oacs.into_bits().into())),
        ("acl", Dec(id.acl.into())),
        ("aerl", Dec(id.aerl.into())),
        ("frmw", Hex(id.frmw.into_bits().into())),
        ("lpa", Hex(id.lpa.into_bits().into())),
        ("elpe", Dec(id.elpe.into())),
        ("npss", Dec(id.npss.into())),
        ("avscc", Hex(id.avscc.into())),
        ("apsta", Hex(id.apsta.into())),
        ("wctemp", Dec(id.wctemp.into())),
        ("cctemp", Dec(id.cctemp.into())),
        ("mtfa", Dec(id.mtfa.into())),
        ("hmpre", Dec(id.hmpre.into())),
        ("hmmin", Dec(id.hmmin.into())),
        ("tnvmcap", big(&id.tnvmcap)),
        ("unvmcap", big(&id.unvmcap)),
        ("rpmbs", Hex(id.rpmbs.into())),
        ("edstt", Dec(id.edstt.into())),
        ("dsto", Dec(id.dsto.into())),
        ("fwug", Dec(id.fwug.into())),
        ("kas", Dec(id.kas.into())),
        ("hctma", Hex(id.hctma.into())),
        ("mntmt", Dec(id.mntmt.into())),
        ("mxtmt", Dec(id.mxtmt.into())),
        ("sanicap", Hex(id.sanicap.into())),
        ("hmminds", Dec(id.hmminds.into())),
        ("hmmaxd", Dec(id.hmmaxd.into())),
        ("nsetidmax", Dec(id.nsetidmax.into())),
        ("endgidmax", Dec(id.endgidmax.into())),
        ("anatt", Dec(id.anatt.into())),
        ("anacap", Dec(id.anacap.into())),
        ("anagrpmax", Dec(id.anagrpmax.into())),
        ("nanagrpid", Dec(id.nanagrpid.into())),
        ("pels", Dec(id.pels.into())),
        ("domainid", Dec(id.domainid.into())),
        ("megcap", big(&id.megcap)),
        ("sqes", Hex(id.sqes.into_bits().into())),
        ("cqes", Hex(id.cqes.into_bits().into())),
        ("maxcmd", Dec(id.maxcmd.into())),
        ("nn", Dec(id.nn.into())),
        ("oncs", Hex(id.oncs.into_bits().into())),
        ("fuses", Hex(id.fuses.into_bits().into())),
        ("fna", Hex(id.fna.into_bits().into())),
        ("vwc", Hex(id.vwc.into_bits().into())),
        ("awun", Dec(id.awun.into())),
        ("awupf", Dec(id.awupf.into())),
        ("icsvscc", Dec(id.icsvscc.into())),
        ("nwpc", Dec(id.nwpc.into())),
        ("acwu", Dec(id.acwu.into())),
        ("ocfs", Hex(id.ocfs.into())),
        ("sgls", Hex(id.sgls.into_bits().into())),
        ("mnan", Dec(id.mnan.into())),
        ("maxdna", big(&id.maxdna)),
        ("maxcna", Dec(id.maxcna.into())),
        ("subnqn", text(&id.subnqn)),
        ("ioccsz", Dec(id.ioccsz.into())),
        ("iorcsz", Dec(id.iorcsz.into())),
        ("icdoff", Dec(id.icdoff.into())),
        ("fcatt", Hex(id.fcatt.into())),
        ("msdbd", Dec(id.msdbd.into())),
        ("ofcs", Dec(id.ofcs.into())),
    ]
}

/// A power state descriptor's fields, as nvme-cli's JSON names them.
pub fn power_state_fields(psd: &PowerStateDescriptor) -> Vec<Field> {
    use Value::Dec;
    vec![
        ("max_power", Dec(psd.mp.into())),
        ("flags", Dec(psd.flags.into_bits().into())),
        ("entry_lat", Dec(psd.enlat.into())),
        ("exit_lat", Dec(psd.exlat.into())),
        ("read_tput", Dec(psd.rrt.into())),
        ("read_lat", Dec(psd.rrl.into())),
        ("write_tput", Dec(psd.rwt.into())),
        ("write_lat", Dec(psd.rwl.into())),
        ("idle_power", Dec(psd.idlp.into())),
        ("idle_scale", Dec(psd.idle.ips().into())),
        ("active_power", Dec(psd.actp.into())),
        ("active_power_work", Dec(psd.active.apw().into())),
        ("active_scale", Dec(psd.active.aps().into())),
    ]
}

/// The power states the controller has (NPSS + 1 of them).
pub fn power_states(id: &IdentifyController) -> &[PowerStateDescriptor] {
    let n = (usize::from(id.npss) + 1).min(id.psd.len());
    &id.psd[..n]
}

/// Identify Namespace's fields, nvme-cli's `id-ns` JSON order (the LBA
/// formats come separately).
pub fn namespace_fields(ns: &IdentifyNamespace) -> Vec<Field> {
    use Value::{Dec, Hex};
    vec![
        ("nsze", Hex(ns.nsze)),
        ("ncap", Hex(ns.ncap)),
        ("nuse", Hex(ns.nuse)),
        ("nsfeat", Hex(ns.nsfeat.into_bits().into())),
        ("nlbaf", Dec(ns.nlbaf.into())),
        ("flbas", Hex(ns.flbas.into_bits().into())),
        ("mc", Hex(ns.mc.into_bits().into())),
        ("dpc", Hex(ns.dpc.into_bits().into())),
        ("dps", Hex(ns.dps.into_bits().into())),
        ("nmic", Dec(ns.nmic.into_bits().into())),
        ("rescap", Hex(ns.rescap.into())),
        ("fpi", Hex(ns.fpi.into())),
        ("dlfeat", Dec(ns.dlfeat.into_bits().into())),
        ("nawun", Dec(ns.nawun.into())),
        ("nawupf", Dec(ns.nawupf.into())),
        ("nacwu", Dec(ns.nacwu.into())),
        ("nabsn", Dec(ns.nabsn.into())),
        ("nabo", Dec(ns.nabo.into())),
        ("nabspf", Dec(ns.nabspf.into())),
        ("noiob", Dec(ns.noiob.into())),
        ("nvmcap", big(&ns.nvmcap)),
        ("nsattr", Dec(ns.nsattr.into())),
        ("nvmsetid", Dec(ns.nvmsetid.into())),
        ("npwg", Dec(ns.npwg.into())),
        ("npwa", Dec(ns.npwa.into())),
        ("npdg", Dec(ns.npdg.into())),
        ("npda", Dec(ns.npda.into())),
        ("nows", Dec(ns.nows.into())),
        ("mssrl", Dec(ns.mssrl.into())),
        ("mcl", Dec(ns.mcl.into())),
        ("msrc", Dec(ns.msrc.into())),
        ("nulbaf", Dec(ns.nulbaf.into())),
        ("anagrpid", Dec(ns.anagrpid.into())),
        ("endgid", Dec(ns.endgid.into())),
        ("eui64", Value::Text(hex_bytes(&ns.eui64))),
        ("nguid", Value::Text(hex_bytes(&ns.nguid))),
    ]
}

/// The LBA formats the namespace has (NLBAF + 1): (MS, LBADS, RP).
pub fn lba_formats(ns: &IdentifyNamespace) -> Vec<(u16, u8, u8)> {
    let n = (usize::from(ns.nlbaf) + 1).min(ns.lbaf.len());
    ns.lbaf[..n].iter().map(|f| (f.ms(), f.lbads(), f.rp())).collect()
}

fn object(fields: &[Field]) -> Map<String, Json> {
    fields.iter().map(|(name, v)| (name.to_string(), v.json())).collect()
}

/// Identify Controller as nvme-cli's `id-ctrl -o json` object.
pub fn controller_json(id: &IdentifyController) -> Json {
    let mut o = object(&controller_fields(id));
    let psds = power_states(id).iter().map(|p| Json::Object(object(&power_state_fields(p)))).collect();
    o.insert("psds".into(), Json::Array(psds));
    Json::Object(o)
}

/// Identify Namespace as nvme-cli's `id-ns -o json` object.
pub fn namespace_json(ns: &IdentifyNamespace) -> Json {
    let mut o = object(&namespace_fields(ns));
    let lbafs = lba_formats(ns)
        .into_iter()
        .map(|(ms, ds, rp)| serde_json::json!({ "ms": ms, "ds": ds, "rp": rp }))
        .collect();
    o.insert("lbafs".into(), Json::Array(lbafs));
    Json::Object(o)
}

fn lines(fields: &[Field], width: usize, out: &mut String) {
    for (name, v) in fields {
        out.push_str(&format!("{name:<width$}: {}\n", v.text()));
    }
}

/// Identify Controller as nvme-cli's `id-ctrl` text.
pub fn controller_text(id: &IdentifyController) -> String {
    let mut out = String::from("NVME Identify Controller:\n");
    lines(&controller_fields(id), 10, &mut out);
    for (i, p) in power_states(id).iter().enumerate() {
        let watts = if p.flags.mxps() { f64::from(p.mp) / 10_000.0 } else { f64::from(p.mp) / 100.0 };
        out.push_str(&format!(
            "ps {i:>4} : mp:{watts:.2}W {} enlat:{} exlat:{} rrt:{} rrl:{}\n            rwt:{} rwl:{} idle_power:{} active_power:{}\n",
            if p.flags.nops() { "non-operational" } else { "operational" },
            p.enlat,
            p.exlat,
            p.rrt,
            p.rrl,
            p.rwt,
            p.rwl,
            p.idlp,
            p.actp,
        ));
    }
    out
}

/// Identify Namespace `nsid` as nvme-cli's `id-ns` text.
pub fn namespace_text(nsid: u32, ns: &IdentifyNamespace) -> String {
    let mut out = format!("NVME Identify Namespace {nsid}:\n");
    lines(&namespace_fields(ns), 8, &mut out);
    let current =
        usize::from(ns.flbas.into_bits() & 0xf) | (usize::from(ns.flbas.into_bits() >> 5 & 0x3) << 4);
    for (i, (ms, ds, rp)) in lba_formats(ns).into_iter().enumerate() {
        let used = if i == current { " (in use)" } else { "" };
        out.push_str(&format!("lbaf {i:>2} : ms:{ms:<3} lbads:{ds:<2} rp:{rp:#x}{used}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> IdentifyController {
        let mut page = [0u8; 4096];
        page[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        page[4..24].copy_from_slice(b"vfio2               ");
        page[73..76].copy_from_slice(&[0x00, 0x54, 0x52]);
        page[80..84].copy_from_slice(&0x0001_0400u32.to_le_bytes());
        // TNVMCAP above 64 bits.
        page[280..296].copy_from_slice(&(u128::from(u64::MAX) + 2).to_le_bytes());
        page[263] = 1; // NPSS: two power states
        page[2048..2050].copy_from_slice(&2500u16.to_le_bytes());
        page[2048 + 32 + 22] = 0b1100_0010; // APS 3, APW 2
        IdentifyController::from_bytes(&page)
    }

    #[test]
    fn controller_json_has_nvme_clis_names_and_types() {
        let j = controller_json(&controller());
        assert_eq!(j["vid"], 6966);
        assert_eq!(j["sn"], "vfio2               ");
        assert_eq!(j["ieee"], 0x525400);
        assert_eq!(j["ver"], 66560);
        assert_eq!(j["tnvmcap"], "18446744073709551617");
        assert_eq!(j["fguid"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(j["psds"].as_array().map(Vec::len), Some(2));
        assert_eq!(j["psds"][0]["max_power"], 2500);
        assert_eq!(j["psds"][1]["active_scale"], 3);
        assert_eq!(j["psds"][1]["active_power_work"], 2);
        // 85 fields and the power states, as nvme-cli 2.3 prints.
        assert_eq!(j.as_object().map(|o| o.len()), Some(86));
    }

    #[test]
    fn controller_text_like_nvme_cli() {
        let t = controller_text(&controller());
        assert!(t.starts_with("NVME Identify Controller:\nvid       : 0x1b36\n"), "{t}");
        assert!(t.contains("\nieee      : 525400\n"), "{t}");
        assert!(t.contains("\ncmic      : 0\n"), "{t}");
        assert!(t.contains("\nps    0 : mp:25.00W operational"), "{t}");
    }

    #[test]
    fn namespace_json_and_text() {
        let mut page = [0u8; 4096];
        page[0..8].copy_from_slice(&0x8000u64.to_le_bytes());
        page[25] = 1; // NLBAF: two formats
        page[26] = 1; // FLBAS: format 1
        page[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
        page[132..136].copy_from_slice(&(8u32 | 12 << 16 | 2 << 24).to_le_bytes());
        let ns = IdentifyNamespace::from_bytes(&page);
        let j = namespace_json(&ns);
        assert_eq!(j["nsze"], 32768);
        assert_eq!(j["nvmcap"], "0");
        assert_eq!(j["eui64"], "0000000000000000");
        assert_eq!(j["lbafs"][1], serde_json::json!({"ms": 8, "ds": 12, "rp": 2}));
        let t = namespace_text(1, &ns);
        assert!(t.contains("nsze    : 0x8000\n"), "{t}");
        assert!(t.contains("lbaf  1 : ms:8   lbads:12 rp:0x2 (in use)\n"), "{t}");
    }
}
