//! cgroup v2 device rules as an eBPF program (`BPF_PROG_TYPE_CGROUP_DEVICE`), as runc does.
//!
//! The last matching rule wins (rules are emitted in reverse, first match returns); a request
//! matches a rule when its type, major, minor match (or the rule's are wildcards) and every
//! requested access (`r`, `w`, `m`) is in the rule's access.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u8,
    /// Destination register (low nibble) and source register (high nibble).
    pub regs: u8,
    /// Jump offset.
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_K: u8 = 0xb4;
const ALU32_MOV_X: u8 = 0xbc;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const EXIT: u8 = 0x95;

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

fn access_bits(a: &str) -> i32 {
    let mut b = 0;
    for c in a.chars() {
        b |= match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => 0,
        };
    }
    b
}

/// Builds the program for `rules` (in spec order).
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<BpfInsn> {
    // R2 = type, R3 = access, R4 = major, R5 = minor (R1 = ctx)
    let mut p = vec![
        ins(LDX_MEM_W, 2, 1, 0, 0),
        ins(ALU32_AND_K, 2, 0, 0, 0xffff),
        ins(LDX_MEM_W, 3, 1, 0, 0),
        ins(ALU32_RSH_K, 3, 0, 0, 16),
        ins(LDX_MEM_W, 4, 1, 4, 0),
        ins(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut b: Vec<(u8, u8, u8, bool, i32)> = Vec::new(); // (code, dst, src, jump-to-next, imm)
        let all = matches!(r.typ(), None | Some(LinuxDeviceType::A));
        let ty = match r.typ() {
            Some(LinuxDeviceType::B) => 1,
            Some(LinuxDeviceType::C) => 2,
            _ => 0,
        };
        if !all {
            b.push((JNE_K, 2, 0, true, ty));
        }
        let acc = access_bits(r.access().as_deref().unwrap_or("rwm"));
        if acc != 7 {
            b.push((ALU32_MOV_X, 1, 3, false, 0));
            b.push((ALU32_AND_K, 1, 0, false, acc));
            b.push((JNE_X, 1, 3, true, 0));
        }
        if let Some(m) = r.major().filter(|m| *m >= 0).filter(|_| !all) {
            b.push((JNE_K, 4, 0, true, m as i32));
        }
        if let Some(m) = r.minor().filter(|m| *m >= 0).filter(|_| !all) {
            b.push((JNE_K, 5, 0, true, m as i32));
        }
        let unconditional = b.is_empty();
        b.push((ALU32_MOV_K, 0, 0, false, i32::from(r.allow())));
        b.push((EXIT, 0, 0, false, 0));
        let n = b.len();
        for (i, (code, dst, src, jump, imm)) in b.into_iter().enumerate() {
            let off = if jump { (n - i - 1) as i16 } else { 0 };
            p.push(ins(code, dst, src, off, imm));
        }
        if unconditional {
            // Matches everything: earlier rules and the default are unreachable (and the
            // verifier refuses unreachable code).
            return p;
        }
    }
    // No rule matched: deny.
    p.push(ins(ALU32_MOV_K, 0, 0, 0, 0));
    p.push(ins(EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Evaluates the program for (type 1=b 2=c, access bits, major, minor).
    fn run(p: &[BpfInsn], ty: u32, acc: u32, major: u32, minor: u32) -> u32 {
        let ctx = [ty | (acc << 16), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0;
        loop {
            let i = p[pc];
            pc += 1;
            let (d, s) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            match i.code {
                LDX_MEM_W => r[d] = u64::from(ctx[i.off as usize / 4]),
                ALU32_AND_K => r[d] = (r[d] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[d] = ((r[d] as u32) >> i.imm) as u64,
                ALU32_MOV_K => r[d] = i.imm as u32 as u64,
                ALU32_MOV_X => r[d] = r[s] as u32 as u64,
                JNE_K => {
                    if r[d] != i.imm as u32 as u64 {
                        pc += i.off as usize;
                    }
                }
                JNE_X => {
                    if r[d] != r[s] {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0] as u32,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn docker_default_rules() {
        let spec = crate::spec::docker_default_spec();
        let rules = spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        let p = program(&rules);
        let (m, r, w) = (1, 2, 4);
        assert_eq!(run(&p, 2, r | w, 1, 3), 1, "/dev/null rw");
        assert_eq!(run(&p, 2, r | w, 136, 7), 1, "/dev/pts/7");
        assert_eq!(run(&p, 1, m, 8, 0), 1, "mknod of a block device");
        assert_eq!(run(&p, 1, r, 8, 0), 0, "reading /dev/sda");
        assert_eq!(run(&p, 2, r, 10, 229), 0, "/dev/fuse");
        assert_eq!(run(&p, 2, r | m, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&p, 2, m, 1, 1), 1, "mknod of /dev/mem");
    }

    #[test]
    fn later_rules_win() {
        let rules: Vec<LinuxDeviceCgroup> = serde_json::from_value(serde_json::json!([
            {"allow": true, "access": "rwm"},
            {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        ]))
        .unwrap();
        let p = program(&rules);
        assert_eq!(run(&p, 2, 2, 1, 3), 0);
        assert_eq!(run(&p, 2, 2, 1, 5), 1);
        assert_eq!(run(&p, 1, 2, 8, 0), 1);
    }
}
