//! Compiling an OCI seccomp profile (`linux.seccomp`) into a classic BPF filter.
//!
//! The filter checks the architecture, refuses x32 system calls, then finds the syscall number
//! by a binary search and tries that syscall's rules in the profile's order (argument
//! conditions), returning the first matching rule's action, or the default action.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::seccomp_names;

/// One BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;
const JA: u16 = 0x05;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: u32 = 0;

const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const MAX_INSNS: usize = 4096;

/// Names of the system calls this architecture knows (as seccomp profiles spell them).
pub fn syscall_names() -> impl Iterator<Item = &'static str> {
    seccomp_names::SYSCALLS.iter().map(|(n, _)| *n)
}

/// Filter flags for `seccomp(2)` (`SECCOMP_FILTER_FLAG_*`).
pub fn filter_flags(s: &LinuxSeccomp) -> u32 {
    let mut f = 0;
    for flag in s.flags().iter().flatten() {
        f |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        };
    }
    f
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, String> {
    let data = |d: u32| d & 0xffff;
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => 0,
        LinuxSeccompAction::ScmpActKillProcess => 0x8000_0000,
        LinuxSeccompAction::ScmpActTrap => 0x0003_0000,
        LinuxSeccompAction::ScmpActErrno => 0x0005_0000 | data(errno.unwrap_or(libc::EPERM as u32)),
        LinuxSeccompAction::ScmpActTrace => 0x7ff0_0000 | data(errno.unwrap_or(libc::EPERM as u32)),
        LinuxSeccompAction::ScmpActLog => 0x7ffc_0000,
        LinuxSeccompAction::ScmpActAllow => 0x7fff_0000,
        LinuxSeccompAction::ScmpActNotify => {
            return Err("seccomp notify actions are not supported".into());
        }
    })
}

/// A jump target inside one rule's block.
#[derive(Clone, Copy)]
enum T {
    /// Skip this many instructions.
    Skip(u8),
    /// To the end of the block (the next rule).
    Fail,
}

struct Block {
    code: Vec<(u16, T, T, u32)>,
}

impl Block {
    fn stmt(&mut self, code: u16, k: u32) {
        self.code.push((code, T::Skip(0), T::Skip(0), k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: T, jf: T) {
        self.code.push((code, jt, jf, k));
    }
    fn finish(self, out: &mut Vec<Insn>) -> Result<(), String> {
        let n = self.code.len();
        for (i, (code, jt, jf, k)) in self.code.into_iter().enumerate() {
            let resolve = |t: T| -> Result<u8, String> {
                match t {
                    T::Skip(s) => Ok(s),
                    T::Fail => u8::try_from(n - i - 1).map_err(|_| "seccomp rule too long".into()),
                }
            };
            out.push(Insn {
                code,
                jt: resolve(jt)?,
                jf: resolve(jf)?,
                k,
            });
        }
        Ok(())
    }
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// Syscalls a leaf of the decision tree compares one after the other.
const LEAF: usize = 4;

/// The argument checks of one rule: falls through to its `RET` when they all hold, else jumps
/// past it (to the next rule of the same syscall).
fn arg_block(args: &[LinuxSeccompArg], act: u32, out: &mut Vec<Insn>) -> Result<(), String> {
    let mut b = Block { code: Vec::new() };
    for a in args {
        if a.index() > 5 {
            return Err(format!(
                "seccomp: argument index {} out of range",
                a.index()
            ));
        }
        let lo_off = OFF_ARGS + 8 * a.index() as u32;
        let hi_off = lo_off + 4;
        let (v, v2) = (a.value(), a.value_two().unwrap_or(0));
        let (hv, lv) = ((v >> 32) as u32, v as u32);
        use LinuxSeccompOperator as Op;
        match a.op() {
            Op::ScmpCmpEq => {
                b.stmt(LD_W_ABS, hi_off);
                b.jump(JEQ_K, hv, T::Skip(0), T::Fail);
                b.stmt(LD_W_ABS, lo_off);
                b.jump(JEQ_K, lv, T::Skip(0), T::Fail);
            }
            Op::ScmpCmpNe => {
                b.stmt(LD_W_ABS, hi_off);
                b.jump(JEQ_K, hv, T::Skip(0), T::Skip(2));
                b.stmt(LD_W_ABS, lo_off);
                b.jump(JEQ_K, lv, T::Fail, T::Skip(0));
            }
            Op::ScmpCmpMaskedEq => {
                let (mh, ml) = ((v >> 32) as u32, v as u32);
                let (eh, el) = ((v2 >> 32) as u32, v2 as u32);
                b.stmt(LD_W_ABS, hi_off);
                b.stmt(AND_K, mh);
                b.jump(JEQ_K, eh, T::Skip(0), T::Fail);
                b.stmt(LD_W_ABS, lo_off);
                b.stmt(AND_K, ml);
                b.jump(JEQ_K, el, T::Skip(0), T::Fail);
            }
            op @ (Op::ScmpCmpGt | Op::ScmpCmpGe) => {
                let last = if op == Op::ScmpCmpGt { JGT_K } else { JGE_K };
                b.stmt(LD_W_ABS, hi_off);
                b.jump(JGT_K, hv, T::Skip(3), T::Skip(0));
                b.jump(JEQ_K, hv, T::Skip(0), T::Fail);
                b.stmt(LD_W_ABS, lo_off);
                b.jump(last, lv, T::Skip(0), T::Fail);
            }
            op @ (Op::ScmpCmpLt | Op::ScmpCmpLe) => {
                let last = if op == Op::ScmpCmpLt { JGE_K } else { JGT_K };
                b.stmt(LD_W_ABS, hi_off);
                b.jump(JGT_K, hv, T::Fail, T::Skip(0));
                b.jump(JEQ_K, hv, T::Skip(0), T::Skip(2));
                b.stmt(LD_W_ABS, lo_off);
                b.jump(last, lv, T::Fail, T::Skip(0));
            }
        }
    }
    b.stmt(RET_K, act);
    b.finish(out)
}

/// A conditional jump over `skip` instructions when the test is true (`JA` when too far).
fn jump_over(code: u16, k: u32, skip: usize, out: &mut Vec<Insn>) -> Result<(), String> {
    match u8::try_from(skip) {
        Ok(s) => out.push(insn(code, s, 0, k)),
        Err(_) => {
            let far = u32::try_from(skip).map_err(|_| "seccomp filter too large")?;
            out.push(insn(code, 0, 1, k));
            out.push(insn(JA, 0, 0, far));
        }
    }
    Ok(())
}

/// A binary search over the sorted syscall numbers (the accumulator holds the number); every
/// path ends in a `RET`, so subtrees are laid out one after the other.
fn tree(nrs: &[(u32, Vec<Insn>)], default: u32) -> Result<Vec<Insn>, String> {
    let mut out = Vec::new();
    if nrs.len() <= LEAF {
        for (nr, body) in nrs {
            // Equal: into the body; otherwise over it.
            match u8::try_from(body.len()) {
                Ok(s) => out.push(insn(JEQ_K, 0, s, *nr)),
                Err(_) => {
                    out.push(insn(JEQ_K, 1, 0, *nr));
                    out.push(insn(JA, 0, 0, body.len() as u32));
                }
            }
            out.extend_from_slice(body);
        }
        out.push(insn(RET_K, 0, 0, default));
        return Ok(out);
    }
    let mid = nrs.len() / 2;
    let left = tree(&nrs[..mid], default)?;
    let right = tree(&nrs[mid..], default)?;
    // nr >= pivot: skip the left subtree.
    jump_over(JGE_K, nrs[mid].0, left.len(), &mut out)?;
    out.extend(left);
    out.extend(right);
    Ok(out)
}

/// Compiles `s` for this architecture. Unknown syscall names are skipped (as runc does).
///
/// Rules are grouped by syscall, keeping the profile's order within a syscall (first match
/// wins); the syscalls are then found by a binary search, so a call costs about
/// `log2(#syscalls)` comparisons instead of one per rule.
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<Insn>, String> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut out = vec![
        insn(LD_W_ABS, 0, 0, OFF_ARCH),
        insn(JEQ_K, 1, 0, AUDIT_ARCH),
        insn(RET_K, 0, 0, default),
        insn(LD_W_ABS, 0, 0, OFF_NR),
        insn(JGE_K, 0, 1, X32_SYSCALL_BIT),
        insn(RET_K, 0, 0, default),
    ];
    // Per syscall: its rules in profile order; `None` once an unconditional rule closed it.
    let mut by_nr: BTreeMap<u32, (Vec<Insn>, bool)> = BTreeMap::new();
    for rule in s.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        let args = rule.args().clone().unwrap_or_default();
        for name in rule.names() {
            let Some(nr) = seccomp_names::number(name) else {
                continue;
            };
            let (body, closed) = by_nr.entry(nr as u32).or_default();
            if *closed {
                continue;
            }
            if args.is_empty() {
                body.push(insn(RET_K, 0, 0, act));
                *closed = true;
            } else {
                arg_block(&args, act, body)?;
            }
        }
    }
    let nrs: Vec<(u32, Vec<Insn>)> = by_nr
        .into_iter()
        .filter_map(|(nr, (mut body, closed))| {
            if !closed {
                body.push(insn(RET_K, 0, 0, default));
            }
            // A syscall that only ever gets the default needs no node.
            let trivial = body.len() == 1 && body[0].k == default;
            (!trivial).then_some((nr, body))
        })
        .collect();
    out.extend(tree(&nrs, default)?);
    if out.len() > MAX_INSNS {
        return Err(format!(
            "seccomp filter too large ({} instructions)",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for the instructions `compile` emits.
    fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                AND_K => acc &= i.k,
                RET_K => return i.k,
                JA => pc += i.k as usize,
                JEQ_K | JGT_K | JGE_K => {
                    let t = match i.code {
                        JEQ_K => acc == i.k,
                        JGT_K => acc > i.k,
                        _ => acc >= i.k,
                    };
                    pc += if t { i.jt } else { i.jf } as usize;
                }
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0001;

    #[test]
    fn allowlist_with_args() {
        let nr = |n: &str| seccomp_names::number(n).unwrap() as u32;
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
                {"names": ["kill"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_LE"}]},
                {"names": ["tkill"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 1, "value": 4294967296u64, "op": "SCMP_CMP_GT"}]},
            ]
        }));
        let prog = compile(&p).unwrap();
        let z = [0u64; 6];
        let with = |a0: u64, a1: u64| [a0, a1, 0, 0, 0, 0];
        assert_eq!(run(&prog, AUDIT_ARCH, nr("read"), z), ALLOW);
        assert_eq!(run(&prog, AUDIT_ARCH, nr("write"), z), ALLOW);
        assert_eq!(run(&prog, AUDIT_ARCH, nr("mount"), z), EPERM);
        assert_eq!(
            run(&prog, 0x4000_0003, nr("read"), z),
            EPERM,
            "foreign arch"
        );
        assert_eq!(
            run(&prog, AUDIT_ARCH, nr("read") | X32_SYSCALL_BIT, z),
            EPERM,
            "x32"
        );
        assert_eq!(run(&prog, AUDIT_ARCH, nr("clone3"), z), 0x0005_0000 | 38);
        assert_eq!(run(&prog, AUDIT_ARCH, nr("personality"), with(8, 0)), ALLOW);
        assert_eq!(run(&prog, AUDIT_ARCH, nr("personality"), with(9, 0)), EPERM);
        assert_eq!(
            run(&prog, AUDIT_ARCH, nr("personality"), with(8 | 1 << 32, 0)),
            EPERM
        );
        assert_eq!(run(&prog, AUDIT_ARCH, nr("clone"), with(0x11, 0)), ALLOW);
        assert_eq!(
            run(&prog, AUDIT_ARCH, nr("clone"), with(0x2000_0000, 0)),
            EPERM,
            "CLONE_NEWPID"
        );
        assert_eq!(run(&prog, AUDIT_ARCH, nr("socket"), with(2, 0)), ALLOW);
        assert_eq!(run(&prog, AUDIT_ARCH, nr("socket"), with(40, 0)), EPERM);
        assert_eq!(run(&prog, AUDIT_ARCH, nr("kill"), with(1, 10)), ALLOW);
        assert_eq!(run(&prog, AUDIT_ARCH, nr("kill"), with(1, 11)), EPERM);
        assert_eq!(run(&prog, AUDIT_ARCH, nr("kill"), with(1, 1 << 32)), EPERM);
        assert_eq!(run(&prog, AUDIT_ARCH, nr("tkill"), with(1, 1 << 32)), EPERM);
        assert_eq!(
            run(&prog, AUDIT_ARCH, nr("tkill"), with(1, (1 << 32) + 1)),
            ALLOW
        );
        assert_eq!(run(&prog, AUDIT_ARCH, nr("tkill"), with(1, 2 << 32)), ALLOW);
        // After an argument rule failed, later rules still see the syscall number.
        assert_eq!(run(&prog, AUDIT_ARCH, nr("read"), with(9, 9)), ALLOW);
    }

    #[test]
    fn ge_lt_boundaries() {
        let nr = seccomp_names::number("kill").unwrap() as u32;
        for (op, val, arg, want) in [
            ("SCMP_CMP_GE", 5u64, 5u64, true),
            ("SCMP_CMP_GE", 5, 4, false),
            ("SCMP_CMP_GE", 1 << 33, 1 << 32, false),
            ("SCMP_CMP_LT", 5, 4, true),
            ("SCMP_CMP_LT", 5, 5, false),
            ("SCMP_CMP_LT", 1 << 33, 5, true),
            ("SCMP_CMP_GT", 5, 6, true),
            ("SCMP_CMP_LE", 5, 6, false),
        ] {
            let p = profile(serde_json::json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ALLOW",
                              "args": [{"index": 0, "value": val, "op": op}]}]
            }));
            let prog = compile(&p).unwrap();
            let got = run(&prog, AUDIT_ARCH, nr, [arg, 0, 0, 0, 0, 0]) == ALLOW;
            assert_eq!(got, want, "{op} {val} vs {arg}");
        }
    }

    #[test]
    fn names_resolve() {
        assert_eq!(seccomp_names::number("read"), Some(libc::SYS_read));
        assert_eq!(seccomp_names::number("clone3"), Some(libc::SYS_clone3));
        assert_eq!(seccomp_names::number("nope"), None);
    }

    /// The profile's meaning, rule by rule in order: the filter must agree with it.
    fn reference(s: &LinuxSeccomp, nr: u32, args: [u64; 6]) -> u32 {
        use LinuxSeccompOperator as Op;
        for r in s.syscalls().iter().flatten() {
            if !r
                .names()
                .iter()
                .any(|n| seccomp_names::number(n) == Some(nr as i64))
            {
                continue;
            }
            let ok = r.args().iter().flatten().all(|a| {
                let x = args[a.index()];
                let v = a.value();
                match a.op() {
                    Op::ScmpCmpEq => x == v,
                    Op::ScmpCmpNe => x != v,
                    Op::ScmpCmpLt => x < v,
                    Op::ScmpCmpLe => x <= v,
                    Op::ScmpCmpGt => x > v,
                    Op::ScmpCmpGe => x >= v,
                    Op::ScmpCmpMaskedEq => x & v == a.value_two().unwrap_or(0),
                }
            });
            if ok {
                return action(r.action(), r.errno_ret()).unwrap();
            }
        }
        action(s.default_action(), s.default_errno_ret()).unwrap()
    }

    #[test]
    fn tree_agrees_with_rule_order_on_docker_default() {
        for caps in [vec![], vec!["CAP_SYS_ADMIN".to_string()]] {
            let p = crate::seccomp_profile::docker_default(&caps);
            let prog = compile(&p).unwrap();
            let vals = [
                0u64,
                1,
                8,
                38,
                39,
                40,
                41,
                0x2000_0000,
                0x7E02_0000,
                0xffff_ffff,
                1 << 32,
            ];
            for nr in 0..470u32 {
                for v in vals {
                    let args = [v, v, 0, 0, 0, 0];
                    assert_eq!(
                        run(&prog, AUDIT_ARCH, nr, args),
                        reference(&p, nr, args),
                        "nr {nr} arg {v:#x} caps {caps:?}"
                    );
                }
            }
        }
    }
}
