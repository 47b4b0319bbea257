//! Checks the device barriers in the driver's machine code for aarch64 and
//! riscv64: the probe crate (`xtask/barrier-probe`) instantiates the doorbell
//! write and the completion poll with a HAL that keeps the default barriers,
//! this module compiles it to assembly and follows the control flow of the
//! two exported functions.
//!
//! - `probe_ring_doorbell`: on every path from the function's entry to a
//!   32-bit store (the doorbell), the last barrier-or-store met is the
//!   architecture's before-doorbell barrier: no store slips in between.
//! - `probe_poll`: on every path from the load of a completion's status
//!   half-word whose bit 0 (the phase tag) is tested, to a read of the rest
//!   of the entry (loads from one base register covering bytes 0..12 of the
//!   16-byte entry), the after-phase barrier comes first; at least one such
//!   read must be reached.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::Path;

struct Arch {
    target: &'static str,
    /// The instruction `before_doorbell` emits, as normalized by `Insn`.
    before_doorbell: &'static str,
    /// The instruction `after_phase` emits.
    after_phase: &'static str,
    /// Where a comment starts.
    comment: &'static str,
    aarch64: bool,
}

const ARCHES: [Arch; 2] = [
    Arch {
        target: "aarch64-unknown-none",
        before_doorbell: "dmb oshst",
        after_phase: "dmb oshld",
        comment: "//",
        aarch64: true,
    },
    Arch {
        target: "riscv64gc-unknown-none-elf",
        before_doorbell: "fence ow,o",
        after_phase: "fence ir,ir",
        comment: "#",
        aarch64: false,
    },
];

/// Builds the probe for each target and checks both functions; prints what
/// went wrong. One tally step.
pub fn check() -> bool {
    let mut ok = true;
    for arch in &ARCHES {
        let asm = match build(arch.target) {
            Some(asm) => asm,
            None => {
                ok = false;
                continue;
            }
        };
        for (name, check) in [
            ("probe_ring_doorbell", check_doorbell as fn(&Arch, &Function) -> Result<String, String>),
            ("probe_poll", check_phase),
        ] {
            let outcome = match Function::find(arch, &asm, name) {
                Some(f) => check(arch, &f),
                None => Err(format!("no function `{name}` in the assembly")),
            };
            match outcome {
                Ok(note) => eprintln!("xtask: barriers {}: {name}: {note}", arch.target),
                Err(why) => {
                    eprintln!("xtask: barriers {}: {name}: FAILED: {why}", arch.target);
                    ok = false;
                }
            }
        }
    }
    ok
}

/// Compiles the probe in release to `target/barrier-probe/<target>.s` and
/// returns the assembly.
fn build(target: &str) -> Option<String> {
    let dir = crate::setup::root().join("target").join("barrier-probe");
    let out = dir.join(format!("{target}.s"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("xtask: cannot create {}: {e}", dir.display());
        return None;
    }
    // Cargo does not know the .s file as an output: throw the probe's own
    // artifacts away (a second or so to rebuild) so that rustc runs and
    // writes it, never leaving a stale one behind.
    let _ = std::fs::remove_file(&out);
    let base = ["-p", "nvme-barrier-probe", "--release", "--target", target];
    let emit = format!("asm={}", out.display());
    let built = crate::run(crate::cargo().arg("clean").args(base))
        && crate::run(crate::cargo().arg("rustc").args(base).args([
            "--",
            "--emit",
            &emit,
            "-C",
            "codegen-units=1",
            "-C",
            "debuginfo=0",
        ]));
    if !built {
        return None;
    }
    read(&out)
}

fn read(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("xtask: cannot read {}: {e}", path.display());
            None
        }
    }
}

/// One line of a function's assembly: a label or an instruction.
struct Insn {
    /// Line number in the .s file (1-based).
    line: usize,
    /// The line as written, for messages.
    text: String,
    /// `Some(name)` for a label.
    label: Option<String>,
    /// Mnemonic, lower case (empty for a label).
    op: String,
    /// Operands split at top-level commas, spaces removed.
    args: Vec<String>,
}

impl Insn {
    /// The line without its indentation, tabs as spaces.
    fn show(&self) -> String {
        self.text.trim().replace('\t', " ")
    }

    /// The instruction as `op a,b,c`, to compare with a barrier.
    fn normalized(&self) -> String {
        if self.args.is_empty() {
            self.op.clone()
        } else {
            format!("{} {}", self.op, self.args.join(","))
        }
    }
}

struct Function {
    insns: Vec<Insn>,
}

enum Flow {
    Next,
    /// A jump to a local label; `cond` when it may also fall through.
    Jump {
        label: String,
        cond: bool,
    },
    /// Leaves the function (return, tail call).
    Exit,
}

/// What a load or store reaches: base register, constant offset (if any),
/// bytes, and the register written (for loads).
struct Access {
    load: bool,
    base: String,
    offset: Option<i64>,
    bytes: i64,
    reg: String,
}

impl Function {
    /// The lines of `name` (from its label to `.Lfunc_end`), comments and
    /// directives dropped.
    fn find(arch: &Arch, asm: &str, name: &str) -> Option<Function> {
        let mut lines = asm.lines().enumerate();
        lines.find(|(_, l)| l.trim() == format!("{name}:"))?;
        let mut insns = Vec::new();
        for (i, raw) in lines {
            let code = raw.split(arch.comment).next().unwrap_or("").trim();
            if code.starts_with(".Lfunc_end") || code.starts_with(".size") {
                break;
            }
            if code.is_empty() {
                continue;
            }
            if let Some(label) = code.strip_suffix(':') {
                if label.starts_with(".Lfunc_begin") || label.starts_with(".Ltmp") {
                    continue;
                }
                insns.push(Insn {
                    line: i + 1,
                    text: raw.to_string(),
                    label: Some(label.to_string()),
                    op: String::new(),
                    args: Vec::new(),
                });
                continue;
            }
            if code.starts_with('.') {
                continue; // a directive
            }
            let (op, rest) = code.split_once(char::is_whitespace).unwrap_or((code, ""));
            insns.push(Insn {
                line: i + 1,
                text: raw.to_string(),
                label: None,
                op: op.to_ascii_lowercase(),
                args: split_args(rest),
            });
        }
        Some(Function { insns })
    }

    fn label_index(&self, label: &str) -> Option<usize> {
        self.insns.iter().position(|i| i.label.as_deref() == Some(label))
    }

    /// Where control goes after instruction `i`: indices in this function.
    fn successors(&self, arch: &Arch, i: usize) -> Vec<usize> {
        let next = if i + 1 < self.insns.len() { vec![i + 1] } else { Vec::new() };
        match flow(arch, &self.insns[i]) {
            Flow::Next => next,
            Flow::Exit => Vec::new(),
            Flow::Jump { label, cond } => {
                let mut s: Vec<usize> = match self.label_index(&label) {
                    Some(t) => vec![t],
                    // Not a label of this function: a tail call.
                    None => Vec::new(),
                };
                if cond {
                    s.extend(next);
                }
                s
            }
        }
    }

    /// Lines `from..=to` of the function (by index), for a message.
    fn excerpt(&self, from: usize, to: usize) -> String {
        let from = from.min(self.insns.len().saturating_sub(1));
        let to = to.min(self.insns.len().saturating_sub(1));
        let mut s = String::new();
        for insn in &self.insns[from..=to] {
            s.push_str(&format!("\n    {:>6}: {}", insn.line, insn.text.trim_end()));
        }
        s
    }
}

/// Splits operands at commas outside brackets and parentheses.
fn split_args(rest: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in rest.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            args.push(std::mem::take(&mut cur));
        } else if !c.is_whitespace() {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args
}

fn flow(arch: &Arch, insn: &Insn) -> Flow {
    if insn.label.is_some() {
        return Flow::Next;
    }
    let op = insn.op.as_str();
    let last = insn.args.last().cloned().unwrap_or_default();
    let jump = |cond| Flow::Jump { label: last.clone(), cond };
    if arch.aarch64 {
        match op {
            "ret" | "br" | "eret" | "brk" | "udf" | "hlt" => Flow::Exit,
            "b" => jump(false),
            "cbz" | "cbnz" | "tbz" | "tbnz" => jump(true),
            _ if op.starts_with("b.") => jump(true),
            _ => Flow::Next,
        }
    } else {
        match op {
            "ret" | "jr" | "tail" | "unimp" | "ebreak" => Flow::Exit,
            "j" => jump(false),
            "beq" | "bne" | "blt" | "bge" | "bltu" | "bgeu" | "bgt" | "ble" | "bgtu" | "bleu" | "beqz"
            | "bnez" | "blez" | "bgez" | "bltz" | "bgtz" => jump(true),
            _ => Flow::Next,
        }
    }
}

/// The register name without its width (aarch64 `w8` and `x8` are one register).
fn reg(arch: &Arch, r: &str) -> String {
    if arch.aarch64 {
        match r {
            "wzr" | "xzr" => "zr".into(),
            "wsp" | "sp" => "sp".into(),
            _ if r.len() > 1
                && (r.starts_with('w') || r.starts_with('x'))
                && r[1..].parse::<u8>().is_ok() =>
            {
                format!("r{}", &r[1..])
            }
            _ => r.into(),
        }
    } else {
        r.into()
    }
}

fn imm(s: &str) -> Option<i64> {
    let s = s.trim_start_matches('#');
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let v = match s.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok()?,
        None => s.parse().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// The memory access of a load or store, if `insn` is one.
fn access(arch: &Arch, insn: &Insn) -> Option<Access> {
    let op = insn.op.as_str();
    if arch.aarch64 {
        let load = op.starts_with("ld");
        if !load && !op.starts_with("st") {
            return None;
        }
        let mem = insn.args.iter().position(|a| a.starts_with('['))?;
        let inner = insn.args[mem].trim_start_matches('[').trim_end_matches('!').trim_end_matches(']');
        let mut parts = inner.split(',');
        let base = reg(arch, parts.next()?);
        // [xN] and [xN, #imm] have a constant offset; [xN], #imm (post-index)
        // reaches xN itself; [xN, xM] is unknown.
        let offset = match parts.next() {
            None => Some(0),
            Some(p) => imm(p),
        };
        let first = insn.args.first()?;
        let reg_bytes = match first.chars().next()? {
            'x' | 'd' => 8,
            'q' => 16,
            'h' => 2,
            'b' => 1,
            _ => 4,
        };
        let mnemonic = op.trim_start_matches("ld").trim_start_matches("st");
        let unit = if mnemonic.ends_with("sw") {
            4
        } else if mnemonic.ends_with('h') {
            2
        } else if mnemonic.ends_with('b') {
            1
        } else {
            reg_bytes
        };
        // ldp/stp (and ldnp/stnp) move two registers.
        let bytes = if mnemonic.ends_with('p') { 2 * reg_bytes } else { unit };
        Some(Access { load, base, offset, bytes, reg: reg(arch, first) })
    } else {
        let bytes = match op.trim_start_matches('f') {
            "lb" | "lbu" | "sb" => 1,
            "lh" | "lhu" | "sh" => 2,
            "lw" | "lwu" | "sw" => 4,
            "ld" | "sd" => 8,
            _ => return None,
        };
        let load = op.trim_start_matches('f').starts_with('l');
        let mem = insn.args.get(1)?;
        let (off, base) = mem.split_once('(')?;
        Some(Access {
            load,
            base: base.trim_end_matches(')').to_string(),
            offset: if off.is_empty() { Some(0) } else { imm(off) },
            bytes,
            reg: insn.args[0].clone(),
        })
    }
}

/// The 32-bit stores other than to the stack: doorbell writes, in
/// `probe_ring_doorbell`.
fn is_word_store(arch: &Arch, insn: &Insn) -> bool {
    matches!(access(arch, insn), Some(a) if !a.load && a.bytes == 4 && a.base != "sp")
        && (!arch.aarch64 || insn.op == "str" || insn.op == "stur")
}

fn check_doorbell(arch: &Arch, f: &Function) -> Result<String, String> {
    let stores: Vec<usize> = (0..f.insns.len()).filter(|&i| is_word_store(arch, &f.insns[i])).collect();
    if stores.is_empty() {
        return Err(format!(
            "expected a 32-bit store (the doorbell write), found none:{}",
            f.excerpt(0, f.insns.len())
        ));
    }
    // Walk every path from the entry; `armed` says a barrier was met and no
    // store since.
    let mut seen = HashSet::new();
    let mut todo = vec![(0usize, false)];
    let mut guarded = HashSet::new();
    while let Some((i, armed)) = todo.pop() {
        if i >= f.insns.len() || !seen.insert((i, armed)) {
            continue;
        }
        let insn = &f.insns[i];
        let mut state = armed;
        if insn.normalized() == arch.before_doorbell {
            state = true;
        } else if access(arch, insn).is_some_and(|a| !a.load) {
            if stores.contains(&i) {
                if !armed {
                    let from = last_barrier_before(f, arch.before_doorbell, i).unwrap_or(0);
                    return Err(format!(
                        "expected `{}` before the doorbell store at line {} with no store in between; \
                         a path reaches it without one:{}",
                        arch.before_doorbell,
                        insn.line,
                        f.excerpt(from.min(i.saturating_sub(12)), i)
                    ));
                }
                guarded.insert(i);
            }
            state = false;
        }
        for s in f.successors(arch, i) {
            todo.push((s, state));
        }
    }
    let first = *guarded.iter().min().ok_or_else(|| "the doorbell store is unreachable".to_string())?;
    let barrier = last_barrier_before(f, arch.before_doorbell, first).unwrap_or(0);
    Ok(format!(
        "`{}` (line {}) on every path to the doorbell store `{}` (line {}), no store in between",
        arch.before_doorbell,
        f.insns[barrier].line,
        f.insns[first].show(),
        f.insns[first].line
    ))
}

fn last_barrier_before(f: &Function, barrier: &str, i: usize) -> Option<usize> {
    (0..i).rev().find(|&j| f.insns[j].normalized() == barrier)
}

/// Indices of half-word loads whose bit 0 is tested before the block ends:
/// the phase-tag reads.
fn phase_loads(arch: &Arch, f: &Function) -> Vec<usize> {
    let mut found = Vec::new();
    for (i, insn) in f.insns.iter().enumerate() {
        let Some(a) = access(arch, insn).filter(|a| a.load && a.bytes == 2 && a.base != "sp") else {
            continue;
        };
        let mut tainted: HashSet<String> = HashSet::from([a.reg.clone()]);
        for next in f.insns.iter().skip(i + 1).take(8) {
            if next.label.is_some() {
                break;
            }
            let args: Vec<String> = next.args.iter().map(|r| reg(arch, r)).collect();
            let uses = |k: usize| args.get(k).is_some_and(|r| tainted.contains(r));
            let bit0 = |s: &str| imm(s) == Some(1);
            let op = next.op.as_str();
            let tested = if arch.aarch64 {
                ((op == "tbz" || op == "tbnz") && uses(0) && args.get(1).and_then(|s| imm(s)) == Some(0))
                    || (op == "tst" && uses(0) && args.get(1).is_some_and(|s| bit0(s)))
                    || ((op == "and" || op == "ands") && uses(1) && args.get(2).is_some_and(|s| bit0(s)))
            } else {
                op == "andi" && uses(1) && args.get(2).is_some_and(|s| bit0(s))
            };
            if tested {
                found.push(i);
                break;
            }
            if !matches!(flow(arch, next), Flow::Next) {
                break;
            }
            // Values computed from the loaded half-word (eor with the
            // expected phase, a move) carry the phase tag too.
            if (1..args.len()).any(uses) && access(arch, next).is_none() {
                tainted.insert(args[0].clone());
            }
        }
    }
    found
}

/// Indices of the first instruction of each read of a completion entry: a
/// run of loads from one base register that covers bytes 0..12 (DW0, DW1,
/// SQHD, SQID, CID) relative to some origin.
fn entry_reads(arch: &Arch, f: &Function) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < f.insns.len() {
        let Some(first) = access(arch, &f.insns[i]).filter(|a| a.load && a.base != "sp") else {
            i += 1;
            continue;
        };
        let mut j = i;
        let mut covered = [false; 16];
        let mut min = i64::MAX;
        while let Some(a) = f.insns.get(j).and_then(|x| access(arch, x)) {
            if !a.load || a.base != first.base {
                break;
            }
            let Some(off) = a.offset else { break };
            if let Ok(start) = usize::try_from(off) {
                for b in covered.iter_mut().skip(start).take(a.bytes as usize) {
                    *b = true;
                }
            }
            min = min.min(off);
            j += 1;
        }
        if j > i + 1
            && min == 0
            && covered[..12].iter().all(|&b| b)
            && only_entry_sized(arch, f, i, &first.base)
        {
            runs.push((i, j - 1));
            i = j;
        } else {
            i += 1;
        }
    }
    runs
}

/// Whether the base register of a load run at `i` points at something no
/// larger than a 16-byte completion entry: since the instruction that last
/// set it (looking back in program order), no access through it falls
/// outside bytes 0..16. A run that reads the first fields of a larger
/// structure (a lock-protected queue's bookkeeping, say) is not an entry.
fn only_entry_sized(arch: &Arch, f: &Function, i: usize, base: &str) -> bool {
    for insn in f.insns[..i].iter().rev().take(64) {
        if insn.label.is_some() {
            continue;
        }
        if let Some(a) = access(arch, insn) {
            if a.base == base && a.offset.is_none_or(|o| !(0..16).contains(&o)) {
                return false;
            }
            if a.load && a.reg == base {
                return true;
            }
            continue;
        }
        if insn.args.first().is_some_and(|d| reg(arch, d) == base) && !is_branch_or_compare(arch, insn) {
            return true;
        }
    }
    true
}

/// Instructions whose first operand is read, not written.
fn is_branch_or_compare(arch: &Arch, insn: &Insn) -> bool {
    let op = insn.op.as_str();
    if arch.aarch64 {
        op.starts_with('b')
            || op.starts_with("cb")
            || op.starts_with("tb")
            || op.starts_with("cmp")
            || op.starts_with("cmn")
            || op.starts_with("tst")
            || op.starts_with("ccmp")
    } else {
        op.starts_with('b') || op.starts_with('j')
    }
}

fn check_phase(arch: &Arch, f: &Function) -> Result<String, String> {
    let phases = phase_loads(arch, f);
    let entries = entry_reads(arch, f);
    if phases.is_empty() || entries.is_empty() {
        return Err(format!(
            "expected a half-word load whose bit 0 is tested (the phase tag) and a read of the \
             rest of the completion entry; found {} and {}",
            phases.len(),
            entries.len()
        ));
    }
    let is_entry = |i: usize| entries.iter().any(|&(s, _)| s == i);
    let mut guarded = BTreeSet::new();
    for &p in &phases {
        // Every path from the phase load to an entry read meets the barrier.
        // Breadth first, so that a failure shows the nearest entry read.
        let mut seen = HashSet::new();
        let mut todo: VecDeque<(usize, Option<usize>)> =
            f.successors(arch, p).into_iter().map(|s| (s, None)).collect();
        while let Some((i, fence)) = todo.pop_front() {
            if !seen.insert((i, fence.is_some())) {
                continue;
            }
            let insn = &f.insns[i];
            if is_entry(i) {
                match fence {
                    Some(_) => {
                        guarded.insert(i);
                    }
                    None => {
                        let end = entries.iter().find(|&&(s, _)| s == i).map_or(i, |&(_, e)| e);
                        return Err(format!(
                            "expected `{}` between the phase-tag load at line {} and the read of the \
                             entry at line {}; a path has none:{}{}",
                            arch.after_phase,
                            f.insns[p].line,
                            insn.line,
                            f.excerpt(p, p + 6),
                            if i > p + 6 {
                                format!("\n    ...{}", f.excerpt(i.saturating_sub(4), end))
                            } else {
                                String::new()
                            }
                        ));
                    }
                }
                continue;
            }
            if phases.contains(&i) {
                continue; // the next peek: its own walk
            }
            let fence = if insn.normalized() == arch.after_phase { Some(i) } else { fence };
            for s in f.successors(arch, i) {
                todo.push_back((s, fence));
            }
        }
    }
    if guarded.is_empty() {
        return Err(format!(
            "no path from a phase-tag load (lines {}) reaches a read of the entry",
            lines(f, phases.iter().copied())
        ));
    }
    Ok(format!(
        "phase-tag loads (lines {}), `{}` on every path to the entry reads (lines {})",
        lines(f, phases.iter().copied()),
        arch.after_phase,
        lines(f, guarded.into_iter())
    ))
}

fn lines(f: &Function, indices: impl Iterator<Item = usize>) -> String {
    indices.map(|i| f.insns[i].line.to_string()).collect::<Vec<_>>().join(", ")
}
