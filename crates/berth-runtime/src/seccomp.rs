//! Compiling an OCI seccomp profile (`linux.seccomp`) into a classic BPF filter.
//!
//! The filter checks the architecture, refuses x32 system calls, then tries each rule in the
//! profile's order (syscall number, then argument conditions) and returns the first matching
//! rule's action, or the default action.

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
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

/// Compiles `s` for this architecture. Unknown syscall names are skipped (as runc does).
pub fn compile(s: &LinuxSeccomp) -> Result<Vec<Insn>, String> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut out = vec![
        Insn {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: OFF_ARCH,
        },
        Insn {
            code: JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH,
        },
        Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: default,
        },
        Insn {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: OFF_NR,
        },
        Insn {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: default,
        },
    ];
    let mut a_is_nr = true;
    for rule in s.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        let args = rule.args().clone().unwrap_or_default();
        if act == default && args.is_empty() {
            continue; // same as falling through
        }
        for name in rule.names() {
            let Some(nr) = seccomp_names::number(name) else {
                continue;
            };
            let mut b = Block { code: Vec::new() };
            if !a_is_nr {
                b.stmt(LD_W_ABS, OFF_NR);
            }
            b.jump(JEQ_K, nr as u32, T::Skip(0), T::Fail);
            for a in &args {
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
            a_is_nr = args.is_empty();
            b.finish(&mut out)?;
        }
    }
    out.push(Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: default,
    });
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
}
