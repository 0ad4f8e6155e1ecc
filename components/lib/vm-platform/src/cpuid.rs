//! What a guest sees of CPUID: a deliberate policy, leaf by leaf, that
//! shows only what the guest really gets.
//!
//! The answer starts from the host's (the world switcher executes CPUID
//! itself) and keeps, per register, an allow-list of features that need
//! nothing the guest lacks: instructions that run natively in guest mode
//! (SSE*, POPCNT, AES, RDRAND, BMI, SHA, ...) and bits that only describe
//! the hardware. Everything else is hidden, so a feature the host gains
//! later stays hidden until someone decides it is the guest's. Hidden, and
//! why:
//!
//! - VMX, SVM and their leaf `0x8000000A`, SEV (`0x8000001F`): there is no
//!   nested virtualization.
//! - XSAVE and everything that needs XSAVE state (AVX, AVX2, FMA, F16C,
//!   AVX-512, XOP, FMA4, VAES, AMX, MPX, leaf `0xD`): the core neither
//!   switches XCR0 nor saves the extended state between guests.
//! - Features whose MSRs are not emulated: MCE/MCA, thermal and power
//!   management (ACPI, TM, EIST, APERF/MPERF, HWP, CPPC, RAPL, P-states),
//!   debug store, PDCM, TSC_ADJUST, speculation controls (IBRS, IBPB,
//!   STIBP, SSBD: a write that never reached the hardware would be a
//!   mitigation the guest only believes in), ARCH_CAPABILITIES, OSVW,
//!   NodeId, the core performance-counter extensions (so Linux uses the
//!   four legacy counters the MSR table keeps), IBS, LWP, PPIN, resource
//!   monitoring, SGX, Intel PT, TME, PCONFIG, PKS, CET, UMWAIT (WAITPKG),
//!   ENQCMD, key locker.
//! - MONITOR/MWAIT and MONITORX/MWAITX (idle is HLT, which exits), PKU
//!   (PKRU is extended state), LA57 (and the linear-address width says 48),
//!   TSX (HLE, RTM), hybrid and architectural-PMU leaves.
//!
//! Shown or synthesized from the platform: the local APIC, x2APIC,
//! TSC-deadline and ARAT only when the caller's [`PlatformFeatures`] say
//! its LAPIC model does them; MTRRs always (the MSR table emulates them);
//! the hypervisor bit and our leaves at [`guest_api::CPUID_BASE`]; when
//! the platform has the paravirtual clock, KVM's signature and clock
//! features at [`guest_api::kvm::CPUID_BASE`], which is how Linux finds
//! it (it scans the hypervisor range for the signature).
//! OSXSAVE and OSPKE follow the guest's CR4, as on hardware: the core does
//! not intercept CR4 writes, so a guest that sets CR4.OSXSAVE or CR4.PKE
//! anyway really has them set. [`xsetbv`] answers that guest's XSETBV:
//! its XCR0 stays x87 alone, the value the core keeps for every guest.
//! The topology is one package, one core, one
//! thread with APIC ID 0 (leaves 1, 4, `0xB`, `0x1F`, `0x80000008`,
//! `0x8000001D`, `0x8000001E`). Family, model, stepping, vendor, brand and
//! the cache and TLB descriptions are the host's.
//!
//! The highest basic leaf is the host's but at most `0x1F`, the highest
//! extended leaf at most `0x80000021`; every leaf outside those ranges and
//! the hypervisor range, and every leaf this table does not name, is all
//! zeros. [`Policy::synthetic`] names the leaves answered without the
//! host's values, so the caller need not execute CPUID for them, and
//! [`Answers`] holds, computed once, the answers to the leaves that depend
//! on neither the subleaf nor the guest's CR4 (most of them), so that the
//! commonest CPUID exits cost a table lookup.

use microvisor_abi::vcpu::event;

use guest_api::{
    CPUID_1_ECX_HYPERVISOR, CPUID_BASE, CPUID_FEATURES, CPUID_MAX, INTERFACE_VERSION, SIGNATURE,
    features, kvm,
};

/// What the world switcher's platform models, which CPUID must agree with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlatformFeatures {
    /// A local APIC model answers at the `IA32_APIC_BASE` address: leaf 1
    /// APIC, ARAT (its timer never stops), and `IA32_APIC_BASE` is the
    /// LAPIC's MSR.
    pub apic: bool,
    /// The LAPIC model has x2APIC mode: leaf 1 ECX bit 21, and MSRs
    /// `0x800..=0x8ff` are the LAPIC's. Ignored without `apic`.
    pub x2apic: bool,
    /// The LAPIC timer has TSC-deadline mode: leaf 1 ECX bit 24 (Linux then
    /// skips calibrating the LAPIC timer), and `IA32_TSC_DEADLINE` is the
    /// LAPIC's MSR. Ignored without `apic`.
    pub tsc_deadline: bool,
    /// The paravirtual clock ([`crate::pvclock`]): KVM's signature and
    /// clock features at [`kvm::CPUID_BASE`], and its two MSRs.
    pub pvclock: bool,
}

/// The CPU vendor, from leaf 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// `AuthenticAMD` or `HygonGenuine`.
    Amd,
    /// `GenuineIntel`.
    Intel,
    Other,
}

/// The highest basic leaf answered (extended topology).
const MAX_BASIC: u32 = 0x1f;
/// The highest extended leaf answered (extended features 2).
const MAX_EXTENDED: u32 = 0x8000_0021;
const EXTENDED_BASE: u32 = 0x8000_0000;

/// The linear-address width without LA57.
const LINEAR_ADDRESS_BITS: u32 = 48;
/// The physical-address width when the host does not say.
const DEFAULT_PHYSICAL_BITS: u8 = 36;

/// CR4 bits CPUID reflects.
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;

/// A mask with the bits at `positions` set.
const fn bits(positions: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < positions.len() {
        mask |= 1 << positions[i];
        i += 1;
    }
    mask
}

/// Leaf 1 ECX, passed from the host.
const LEAF1_ECX: u32 = bits(&[
    0,  // SSE3
    1,  // PCLMULQDQ
    9,  // SSSE3
    13, // CMPXCHG16B
    17, // PCID: the guest's CR4 and ASID-tagged TLB
    19, // SSE4.1
    20, // SSE4.2
    22, // MOVBE
    23, // POPCNT
    25, // AES
    30, // RDRAND
]);
const LEAF1_ECX_X2APIC: u32 = 1 << 21;
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;

/// EDX bits leaf 1 and AMD's `0x80000001` share, passed from the host.
const EDX_COMMON: u32 = bits(&[
    0,  // FPU
    1,  // VME
    2,  // DE
    3,  // PSE
    4,  // TSC
    5,  // MSR
    6,  // PAE
    8,  // CX8
    13, // PGE
    15, // CMOV
    16, // PAT
    17, // PSE-36
    23, // MMX
    24, // FXSR
]);
/// Leaf 1 EDX, passed.
const LEAF1_EDX: u32 = EDX_COMMON
    | bits(&[
        11, // SEP: the SYSENTER MSRs are the guest's
        19, // CLFLUSH
        25, // SSE
        26, // SSE2
        27, // SS (self-snoop)
    ]);
const EDX_APIC: u32 = 1 << 9;
const EDX_MTRR: u32 = 1 << 12;

/// Leaf 7 subleaf 0 EBX, passed.
const LEAF7_EBX: u32 = bits(&[
    0,  // FSGSBASE: FS/GS bases are switched with the guest
    3,  // BMI1
    6,  // FDP_EXCPTN_ONLY
    7,  // SMEP
    8,  // BMI2
    9,  // ERMS
    10, // INVPCID
    13, // FCS/FDS deprecated
    18, // RDSEED
    19, // ADX
    20, // SMAP
    23, // CLFLUSHOPT
    24, // CLWB
    29, // SHA
]);
/// Leaf 7 subleaf 0 ECX, passed.
const LEAF7_ECX: u32 = bits(&[
    0,  // PREFETCHWT1
    2,  // UMIP: the guest's CR4
    8,  // GFNI (its SSE forms)
    25, // CLDEMOTE
    22, // RDPID: the core loads the guest's TSC_AUX around each entry
    27, // MOVDIRI
    28, // MOVDIR64B
]);
const LEAF7_ECX_OSPKE: u32 = 1 << 4;
const LEAF7_ECX_RDPID: u32 = 1 << 22;
/// Leaf 7 subleaf 0 EDX, passed.
const LEAF7_EDX: u32 = bits(&[
    4,  // FSRM
    10, // MD_CLEAR
    14, // SERIALIZE
]);
/// Leaf 7 subleaf 1 EAX, passed.
const LEAF7_1_EAX: u32 = bits(&[
    10, // zero-length MOVSB
    11, // fast short STOSB
    12, // fast short CMPSB/SCASB
]);

/// Leaf 6 EAX bit 2: the APIC timer runs in every C-state.
const LEAF6_EAX_ARAT: u32 = 1 << 2;

/// Leaf `0x80000001` ECX, passed.
const EXTENDED1_ECX: u32 = bits(&[
    0,  // LAHF/SAHF in long mode
    5,  // ABM (LZCNT)
    6,  // SSE4A
    7,  // misaligned SSE
    8,  // 3DNowPrefetch
    21, // TBM
    22, // TopologyExtensions (leaves 0x8000001D/E say one thread)
]);
const EXTENDED1_ECX_TOPOLOGY: u32 = 1 << 22;
/// Leaf `0x80000001` EDX, passed on every vendor.
const EXTENDED1_EDX: u32 = bits(&[
    11, // SYSCALL: STAR/LSTAR/CSTAR/SFMASK are the guest's
    20, // NX
    26, // 1 GiB pages
    27, // RDTSCP: the core loads the guest's TSC_AUX around each entry
    29, // long mode
]);
/// Leaf `0x80000001` EDX bits only AMD defines: its mirror of leaf 1 (APIC
/// and MTRR are synthesized as there) and its own.
const EXTENDED1_EDX_AMD: u32 = EDX_COMMON
    | bits(&[
        22, // MMX extensions
        25, // FFXSR: EFER.FFXSR is then the guest's
        30, // 3DNow! extensions
        31, // 3DNow!
    ]);
const EXTENDED1_EDX_NX: u32 = 1 << 20;
const EXTENDED1_EDX_RDTSCP: u32 = 1 << 27;
const EXTENDED1_EDX_FFXSR: u32 = 1 << 25;

/// Leaf `0x80000007` EDX bit 8: the TSC is invariant.
const EXTENDED7_EDX: u32 = 1 << 8;

/// Leaf `0x80000008` EBX, passed.
const EXTENDED8_EBX: u32 = bits(&[
    0,  // CLZERO
    2,  // FXSAVE always saves the error pointers
    9,  // WBNOINVD
    13, // WBINVD is interruptible
    26, // not affected by speculative store bypass
    29, // not affected by branch type confusion
]);
/// Leaf `0x80000008` EBX bit 20 (AMD): EFER.LMSLE is unsupported, as the
/// MSR table's EFER says.
const EXTENDED8_EBX_NO_LMSLE: u32 = 1 << 20;

/// Leaf `0x80000021` EAX, passed.
const EXTENDED21_EAX: u32 = bits(&[
    0, // no nested data breakpoints
    2, // LFENCE is always serializing
    6, // a null selector clears the base
]);

/// Leaf `0xB`/`0x1F` level types.
const LEVEL_THREAD: u32 = 1 << 8;
const LEVEL_CORE: u32 = 2 << 8;

/// A hypervisor range's first leaf: its highest leaf and `signature` in
/// `ebx`, `ecx`, `edx`.
fn signature_leaf(max: u32, signature: &[u8; 12]) -> [u32; 4] {
    let word = |i: usize| {
        u32::from_le_bytes([
            signature[i * 4],
            signature[i * 4 + 1],
            signature[i * 4 + 2],
            signature[i * 4 + 3],
        ])
    };
    [max, word(0), word(1), word(2)]
}

/// The CPUID policy of one VM: the host's ranges and the platform's
/// features, fixed when the VM boots.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    platform: PlatformFeatures,
    vendor: Vendor,
    max_basic: u32,
    max_extended: u32,
    /// The highest subleaf of leaf 7 answered (0 or 1).
    max_leaf7: u32,
    physical_address_bits: u8,
    no_execute: bool,
    fast_fxsave: bool,
    topology_extensions: bool,
    /// RDTSCP or RDPID is shown, and with them `TSC_AUX`.
    tsc_aux: bool,
}

impl Policy {
    /// The policy for a guest on this `platform`, reading the host's
    /// ranges and the few features the MSR table depends on through `host`
    /// (leaf, subleaf) → `[eax, ebx, ecx, edx]`.
    pub fn new(platform: PlatformFeatures, mut host: impl FnMut(u32, u32) -> [u32; 4]) -> Self {
        let platform = PlatformFeatures {
            x2apic: platform.apic && platform.x2apic,
            tsc_deadline: platform.apic && platform.tsc_deadline,
            ..platform
        };
        let [max_basic, b, c, d] = host(0, 0);
        let mut name = [0; 12];
        name[..4].copy_from_slice(&b.to_le_bytes());
        name[4..8].copy_from_slice(&d.to_le_bytes());
        name[8..].copy_from_slice(&c.to_le_bytes());
        let vendor = match &name {
            b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
            b"GenuineIntel" => Vendor::Intel,
            _ => Vendor::Other,
        };
        let max_basic = max_basic.min(MAX_BASIC);
        let (max_leaf7, rdpid) = if max_basic >= 7 {
            let [eax, _, ecx, _] = host(7, 0);
            (eax.min(1), ecx & LEAF7_ECX_RDPID != 0)
        } else {
            (0, false)
        };
        let max_extended = host(EXTENDED_BASE, 0)[0].clamp(EXTENDED_BASE, MAX_EXTENDED);
        let [_, _, ecx, edx] = if max_extended >= 0x8000_0001 {
            host(0x8000_0001, 0)
        } else {
            [0; 4]
        };
        let physical_address_bits = if max_extended >= 0x8000_0008 {
            match host(0x8000_0008, 0)[0] as u8 {
                bits @ 32..=52 => bits,
                _ => DEFAULT_PHYSICAL_BITS,
            }
        } else {
            DEFAULT_PHYSICAL_BITS
        };
        Self {
            platform,
            vendor,
            max_basic,
            max_extended,
            max_leaf7,
            physical_address_bits,
            no_execute: edx & EXTENDED1_EDX_NX != 0,
            fast_fxsave: vendor == Vendor::Amd && edx & EXTENDED1_EDX_FFXSR != 0,
            topology_extensions: ecx & EXTENDED1_ECX_TOPOLOGY != 0,
            tsc_aux: rdpid || edx & EXTENDED1_EDX_RDTSCP != 0,
        }
    }

    /// Whether `TSC_AUX` exists for the guest (RDTSCP or RDPID is shown).
    pub fn tsc_aux(&self) -> bool {
        self.tsc_aux
    }

    /// The platform features, x2APIC and TSC-deadline cleared without an
    /// APIC.
    pub fn platform(&self) -> PlatformFeatures {
        self.platform
    }

    pub fn vendor(&self) -> Vendor {
        self.vendor
    }

    /// The guest's physical-address width (leaf `0x80000008` EAX[7:0]).
    pub fn physical_address_bits(&self) -> u8 {
        self.physical_address_bits
    }

    /// Whether EFER.NXE exists for the guest (NX is shown).
    pub fn no_execute(&self) -> bool {
        self.no_execute
    }

    /// Whether EFER.FFXSR exists for the guest (FFXSR is shown).
    pub fn fast_fxsave(&self) -> bool {
        self.fast_fxsave
    }

    /// Whether `leaf` is answered without the host's values: the caller
    /// may pass anything as `native` to [`Policy::emulate`] for it.
    pub fn synthetic(&self, leaf: u32) -> bool {
        !self.reads_host(leaf)
    }

    fn reads_host(&self, leaf: u32) -> bool {
        match leaf {
            0..=MAX_BASIC if leaf <= self.max_basic => {
                matches!(leaf, 0 | 1 | 2 | 4 | 7 | 0x15 | 0x16)
            }
            EXTENDED_BASE..=MAX_EXTENDED if leaf <= self.max_extended => match leaf {
                0x8000_001d => self.topology_extensions,
                _ => matches!(
                    leaf,
                    EXTENDED_BASE..=0x8000_0008 | 0x8000_0019 | 0x8000_001a | 0x8000_0021
                ),
            },
            _ => false,
        }
    }

    /// The guest's CPUID result for `leaf` and `subleaf` (ECX), given the
    /// host's `native` answer (`[eax, ebx, ecx, edx]`, unused for
    /// [`Policy::synthetic`] leaves) and the guest's `cr4`.
    pub fn emulate(&self, leaf: u32, subleaf: u32, native: [u32; 4], cr4: u64) -> [u32; 4] {
        if self.synthetic(leaf) {
            self.synthesize(leaf, subleaf)
        } else {
            self.filter(leaf, subleaf, native, cr4)
        }
    }

    /// The leaves made without the host.
    fn synthesize(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let in_basic = leaf <= self.max_basic;
        match leaf {
            6 if in_basic && self.platform.apic => [LEAF6_EAX_ARAT, 0, 0, 0],
            0xb | 0x1f if in_basic => match subleaf {
                // One thread, the only one of its core, which is the only
                // one of its package; x2APIC ID 0.
                0 => [0, 1, LEVEL_THREAD, 0],
                1 => [0, 1, LEVEL_CORE | 1, 0],
                _ => [0, 0, subleaf & 0xff, 0],
            },
            CPUID_BASE => signature_leaf(CPUID_MAX, &SIGNATURE),
            CPUID_FEATURES => [features::ALL, INTERFACE_VERSION, 0, 0],
            kvm::CPUID_BASE if self.platform.pvclock => {
                signature_leaf(kvm::CPUID_FEATURES, &kvm::SIGNATURE)
            }
            kvm::CPUID_FEATURES if self.platform.pvclock => [kvm::features::ALL, 0, 0, 0],
            // 0x8000001E (extended APIC ID 0, one thread per core, node 0
            // of one) is all zeros too, as is every leaf this table does
            // not name or that lies beyond the ranges.
            _ => [0; 4],
        }
    }

    /// The leaves filtered from the host's answer.
    fn filter(&self, leaf: u32, subleaf: u32, native: [u32; 4], cr4: u64) -> [u32; 4] {
        let [eax, ebx, ecx, edx] = native;
        let amd = self.vendor == Vendor::Amd;
        let apic = if self.platform.apic { EDX_APIC } else { 0 };
        match leaf {
            0 => [self.max_basic, ebx, ecx, edx],
            1 => {
                let mut ecx = ecx & LEAF1_ECX | CPUID_1_ECX_HYPERVISOR;
                if self.platform.x2apic {
                    ecx |= LEAF1_ECX_X2APIC;
                }
                if self.platform.tsc_deadline {
                    ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
                if cr4 & CR4_OSXSAVE != 0 {
                    ecx |= LEAF1_ECX_OSXSAVE;
                }
                // Brand index and CLFLUSH size kept; one logical
                // processor, APIC ID 0.
                let ebx = ebx & 0xffff | 1 << 16;
                [eax, ebx, ecx, edx & LEAF1_EDX | apic | EDX_MTRR]
            }
            // Cache parameters, shared by nothing else: no other cores or
            // threads in the package.
            4 => [eax & 0x3fff, ebx, ecx, edx],
            7 => match subleaf {
                0 => {
                    let ospke = if cr4 & CR4_PKE != 0 {
                        LEAF7_ECX_OSPKE
                    } else {
                        0
                    };
                    [
                        self.max_leaf7,
                        ebx & LEAF7_EBX,
                        ecx & LEAF7_ECX | ospke,
                        edx & LEAF7_EDX,
                    ]
                }
                1 if self.max_leaf7 >= 1 => [eax & LEAF7_1_EAX, 0, 0, 0],
                _ => [0; 4],
            },
            // Cache descriptors (2), TSC and core crystal clocks (0x15),
            // frequencies (0x16): descriptions of the host, which runs the
            // guest's TSC unchanged.
            2 | 0x15 | 0x16 => native,
            EXTENDED_BASE => [self.max_extended, ebx, ecx, edx],
            0x8000_0001 => {
                let mut passed = EXTENDED1_EDX;
                let mut extra = 0;
                if amd {
                    passed |= EXTENDED1_EDX_AMD;
                    extra = apic | EDX_MTRR;
                }
                [eax, ebx, ecx & EXTENDED1_ECX, edx & passed | extra]
            }
            0x8000_0007 => [0, 0, 0, edx & EXTENDED7_EDX],
            0x8000_0008 => {
                let physical = u32::from(self.physical_address_bits);
                let linear = (eax >> 8 & 0xff).min(LINEAR_ADDRESS_BITS);
                let ebx = ebx & EXTENDED8_EBX | if amd { EXTENDED8_EBX_NO_LMSLE } else { 0 };
                // ECX: one core, no APIC ID bits for cores; EDX: no
                // INVLPGB, no RDPRU.
                [linear << 8 | physical, ebx, 0, 0]
            }
            // Brand string (0x80000002–4), L1/L2/L3 caches and TLBs
            // (0x80000005/6), 1 GiB TLBs (0x80000019), performance hints
            // (0x8000001A).
            0x8000_0002..=0x8000_0006 | 0x8000_0019 | 0x8000_001a => native,
            // Cache topology: nothing shares a cache with this thread.
            0x8000_001d => [eax & !(0xfff << 14), ebx, ecx, edx],
            0x8000_0021 => [eax & EXTENDED21_EAX, 0, 0, 0],
            // reads_host names no other leaf.
            _ => [0; 4],
        }
    }
}

/// Leaves whose answer depends on the subleaf (ECX) or on the guest's CR4:
/// [`Answers`] leaves them to [`Policy::emulate`].
const fn varies(leaf: u32) -> bool {
    matches!(leaf, 1 | 4 | 7 | 0xb | 0x1f | 0x8000_001d)
}

/// The slots of [`Answers`]: the basic range, the two hypervisor ranges'
/// first two leaves, and the extended range.
const ANSWER_SLOTS: usize = 32 + 2 + 2 + 34;

/// The guest's answers to the leaves that depend on neither the subleaf
/// nor the guest's state, computed once from a [`Policy`] and the host
/// (whose answers to them do not change while the system runs), so that
/// the commonest CPUID exits cost a lookup: every leaf of the basic range
/// (`0..=0x1f`), the extended range (`0x80000000..=0x80000021`) and the
/// first two leaves of each hypervisor range but those whose answer varies
/// (leaves 1 and 7 with CR4, 4, 7, `0xB`, `0x1F` and `0x8000001D` with the
/// subleaf). [`Answers::get`] gives exactly what [`Policy::emulate`] would.
#[derive(Clone, Debug)]
pub struct Answers {
    slots: [Option<[u32; 4]>; ANSWER_SLOTS],
}

impl Answers {
    /// Fills the table from `policy`, executing the host's CPUID through
    /// `host` (leaf, subleaf) for the leaves that read it.
    pub fn new(policy: &Policy, mut host: impl FnMut(u32, u32) -> [u32; 4]) -> Self {
        let mut slots = [None; ANSWER_SLOTS];
        let leaves = (0..=MAX_BASIC)
            .chain([CPUID_BASE, CPUID_FEATURES])
            .chain([kvm::CPUID_BASE, kvm::CPUID_FEATURES])
            .chain(EXTENDED_BASE..=MAX_EXTENDED);
        for leaf in leaves {
            if varies(leaf) {
                continue;
            }
            let native = if policy.synthetic(leaf) {
                [0; 4]
            } else {
                host(leaf, 0)
            };
            if let Some(slot) = Self::slot(leaf) {
                // Neither the subleaf nor CR4 matters for these leaves.
                slots[slot] = Some(policy.emulate(leaf, 0, native, 0));
            }
        }
        Self { slots }
    }

    /// Where `leaf`'s answer is kept, if it has a slot.
    #[inline]
    fn slot(leaf: u32) -> Option<usize> {
        const _: () = assert!(CPUID_FEATURES == CPUID_BASE + 1);
        const _: () = assert!(kvm::CPUID_FEATURES == kvm::CPUID_BASE + 1);
        match leaf {
            0..=MAX_BASIC => Some(leaf as usize),
            CPUID_BASE | CPUID_FEATURES => Some(32 + (leaf - CPUID_BASE) as usize),
            kvm::CPUID_BASE | kvm::CPUID_FEATURES => Some(34 + (leaf - kvm::CPUID_BASE) as usize),
            EXTENDED_BASE..=MAX_EXTENDED => Some(36 + (leaf - EXTENDED_BASE) as usize),
            _ => None,
        }
    }

    /// The guest's answer to `leaf`, whatever the subleaf and the guest's
    /// state, if the table holds it; `None`: ask [`Policy::emulate`].
    #[inline]
    pub fn get(&self, leaf: u32) -> Option<&[u32; 4]> {
        self.slots[Self::slot(leaf)?].as_ref()
    }
}

/// The only XCR0 a guest has: x87 state alone. XCR0 is the CPU's, shared
/// by every guest and the core, which never enables extended state (it
/// saves guests' state with FXSAVE), so no guest may change it.
pub const GUEST_XCR0: u64 = 1;

/// What a guest's XSETBV (XCR `index`, `value` from EDX:EAX, with `cr4`
/// the guest's) does, as a CPU whose XCR0 supports only x87 state would
/// answer it: `Ok` for a write of [`GUEST_XCR0`] to XCR0 (which changes
/// nothing: the instruction is skipped), else the event to inject — `#UD`
/// while CR4.OSXSAVE is clear, `#GP(0)` for any other register or value.
pub fn xsetbv(cr4: u64, index: u32, value: u64) -> Result<(), u64> {
    if cr4 & CR4_OSXSAVE == 0 {
        Err(event::UD)
    } else if index != 0 || value != GUEST_XCR0 {
        Err(event::GP0)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn xsetbv_keeps_xcr0_at_x87() {
        assert_eq!(
            xsetbv(0, 0, GUEST_XCR0),
            Err(event::UD),
            "CR4.OSXSAVE clear"
        );
        assert_eq!(xsetbv(CR4_OSXSAVE, 0, GUEST_XCR0), Ok(()));
        for value in [0, 3, 7, 0xe7, 1 << 63] {
            assert_eq!(xsetbv(CR4_OSXSAVE, 0, value), Err(event::GP0), "{value:#x}");
        }
        assert_eq!(xsetbv(CR4_OSXSAVE, 1, GUEST_XCR0), Err(event::GP0), "XCR1");
    }

    const ALL: [u32; 4] = [!0; 4];

    /// A host whose every leaf answers `answer(leaf, subleaf)`, with the
    /// vendor string and ranges of `leaf0` and `extended0`.
    fn policy_on(
        platform: PlatformFeatures,
        leaf0: [u32; 4],
        extended0: u32,
        answer: [u32; 4],
    ) -> Policy {
        Policy::new(platform, |leaf, _| match leaf {
            0 => leaf0,
            EXTENDED_BASE => [extended0, 0, 0, 0],
            _ => answer,
        })
    }

    const AMD: [u32; 4] = [
        0x20,
        u32::from_le_bytes(*b"Auth"),
        u32::from_le_bytes(*b"cAMD"),
        u32::from_le_bytes(*b"enti"),
    ];
    const INTEL: [u32; 4] = [
        0x20,
        u32::from_le_bytes(*b"Genu"),
        u32::from_le_bytes(*b"ntel"),
        u32::from_le_bytes(*b"ineI"),
    ];

    /// An AMD host that offers every feature bit in every leaf.
    fn everything(platform: PlatformFeatures) -> Policy {
        policy_on(platform, AMD, 0x8000_0028, ALL)
    }

    const NONE: PlatformFeatures = PlatformFeatures {
        apic: false,
        x2apic: false,
        tsc_deadline: false,
        pvclock: false,
    };
    const FULL: PlatformFeatures = PlatformFeatures {
        apic: true,
        x2apic: true,
        tsc_deadline: true,
        pvclock: true,
    };

    /// The leaves QEMU 7.2 TCG `-cpu max` answers (read from a multiboot
    /// kernel under `qemu-system-x86_64 -accel tcg -cpu max`): AMD family
    /// 0x15 model 0x6b, max basic leaf 0xd, max extended 0x8000000a.
    fn qemu_max(leaf: u32, subleaf: u32) -> [u32; 4] {
        match (leaf, subleaf) {
            (0, _) => [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            (1, _) => [0x0006_0fb1, 0x0000_0800, 0xf6d8_320b, 0x0fcb_fbfd],
            (6, _) => [0x4, 0, 0, 0],
            (7, 0) => [0, 0x01d8_43a9, 0x8001_020c, 0],
            (0xb, 0) => [0, 1, 0x100, 0],
            (0xb, 1) => [0, 1, 0x201, 0],
            (0xd, 0) => [0x21f, 0x240, 0xa88, 0],
            (0xd, 1) => [0x5, 0x3c8, 0, 0],
            (0x8000_0000, _) => [0x8000_000a, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            (0x8000_0001, _) => [0x0006_0fb1, 0, 0x75, 0xedd3_fbfd],
            (0x8000_0002, _) => [0x554d_4551, 0x4743_5420, 0x5550_4320, 0x7265_7620],
            (0x8000_0005, _) => [0x01ff_01ff, 0x01ff_01ff, 0x4002_0140, 0x4002_0140],
            (0x8000_0006, _) => [0, 0x4200_4200, 0x0200_8140, 0x0080_8140],
            (0x8000_0008, _) => [0x3928, 0, 0, 0],
            (0x8000_000a, _) => [0x1, 0x10, 0, 0x1001_0001],
            // Beyond the ranges QEMU repeats leaf 0xd.
            (0xe..=0x3fff_ffff, _) | (0x8000_000b.., _) => [0x21f, 0x240, 0xa88, 0],
            _ => [0; 4],
        }
    }

    fn on_qemu_max(platform: PlatformFeatures, leaf: u32, subleaf: u32, cr4: u64) -> [u32; 4] {
        let policy = Policy::new(platform, qemu_max);
        policy.emulate(leaf, subleaf, qemu_max(leaf, subleaf), cr4)
    }

    #[test]
    fn qemu_max_as_the_guest_sees_it() {
        let table: &[(u32, u32, [u32; 4])] = &[
            (0, 0, [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            // ECX keeps SSE3, PCLMULQDQ, SSSE3, CX16, SSE4.1/4.2, MOVBE,
            // POPCNT, AES, RDRAND, hypervisor; drops MONITOR (3), FMA
            // (12), XSAVE (26), AVX (28), F16C (29). EDX drops MCE (7),
            // APIC (9), MCA (14), ACPI (22); keeps MTRR (12).
            (1, 0, [0x0006_0fb1, 0x0001_0800, 0xc2d8_2203, 0x0f8b_b97d]),
            (6, 0, [0, 0, 0, 0]),
            // EBX keeps FSGSBASE, BMI1, SMEP, BMI2, ERMS, ADX, SMAP,
            // CLFLUSHOPT, CLWB; drops AVX2 (5), MPX (14), bit 22. ECX keeps
            // UMIP; drops PKU (3), VAES (9), LA57 (16), PKS (31).
            (7, 0, [0, 0x0198_0389, 0x4, 0]),
            (0xb, 0, [0, 1, 0x100, 0]),
            (0xb, 1, [0, 1, 0x201, 0]),
            (0xb, 2, [0, 0, 2, 0]),
            (0xd, 0, [0; 4]),
            (0xd, 1, [0; 4]),
            (0xe, 0, [0; 4]),
            (
                0x8000_0000,
                0,
                [0x8000_000a, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            ),
            // ECX drops SVM (2) and AltMovCr8 (4); EDX drops MCE, APIC,
            // MCA; keeps RDTSCP (27).
            (0x8000_0001, 0, [0x0006_0fb1, 0, 0x61, 0xedd3_b97d]),
            (
                0x8000_0002,
                0,
                [0x554d_4551, 0x4743_5420, 0x5550_4320, 0x7265_7620],
            ),
            (
                0x8000_0005,
                0,
                [0x01ff_01ff, 0x01ff_01ff, 0x4002_0140, 0x4002_0140],
            ),
            (0x8000_0006, 0, [0, 0x4200_4200, 0x0200_8140, 0x0080_8140]),
            // 40 physical bits, 48 linear (not 57), EFER.LMSLE absent.
            (0x8000_0008, 0, [0x3028, 1 << 20, 0, 0]),
            (0x8000_000a, 0, [0; 4]),
            (0x8000_001e, 0, [0; 4]),
            (0x8000_001f, 0, [0; 4]),
            (
                0x4000_0000,
                0,
                [0x4000_0001, 0x7263_694d, 0x7369_766f, 0x5648_726f],
            ),
        ];
        for &(leaf, subleaf, expected) in table {
            assert_eq!(
                on_qemu_max(NONE, leaf, subleaf, 0),
                expected,
                "leaf {leaf:#x}.{subleaf}"
            );
        }
        let policy = Policy::new(NONE, qemu_max);
        assert_eq!(policy.physical_address_bits(), 40);
        assert_eq!(policy.vendor(), Vendor::Amd);
        assert!(policy.no_execute() && !policy.fast_fxsave());
    }

    #[test]
    fn the_platform_decides_apic_x2apic_tsc_deadline_and_arat() {
        let [_, _, ecx, edx] = on_qemu_max(FULL, 1, 0, 0);
        assert_eq!(ecx & (1 << 21 | 1 << 24), 1 << 21 | 1 << 24);
        assert_eq!(edx & 1 << 9, 1 << 9);
        assert_eq!(on_qemu_max(FULL, 0x8000_0001, 0, 0)[3] & 1 << 9, 1 << 9);
        assert_eq!(on_qemu_max(FULL, 6, 0, 0), [1 << 2, 0, 0, 0]);
        // Without an APIC neither x2APIC nor TSC-deadline can be.
        let orphans = PlatformFeatures {
            apic: false,
            ..FULL
        };
        let [_, _, ecx, edx] = on_qemu_max(orphans, 1, 0, 0);
        assert_eq!(ecx & (1 << 21 | 1 << 24), 0);
        assert_eq!(edx & 1 << 9, 0);
        let platform = Policy::new(orphans, qemu_max).platform();
        assert!(!platform.x2apic && !platform.tsc_deadline);
        // Each flag alone.
        let deadline_only = PlatformFeatures {
            apic: true,
            x2apic: false,
            tsc_deadline: true,
            pvclock: false,
        };
        assert_eq!(
            on_qemu_max(deadline_only, 1, 0, 0)[2] & (1 << 21 | 1 << 24),
            1 << 24
        );
    }

    #[test]
    fn osxsave_and_ospke_follow_the_guest_cr4() {
        assert_eq!(on_qemu_max(NONE, 1, 0, 0)[2] & 1 << 27, 0);
        assert_eq!(on_qemu_max(NONE, 1, 0, 1 << 18)[2] & 1 << 27, 1 << 27);
        assert_eq!(on_qemu_max(NONE, 1, 0, !(1 << 18))[2] & 1 << 27, 0);
        assert_eq!(on_qemu_max(NONE, 7, 0, 0)[2] & 1 << 4, 0);
        assert_eq!(on_qemu_max(NONE, 7, 0, 1 << 22)[2] & 1 << 4, 1 << 4);
        // XSAVE itself stays hidden.
        assert_eq!(on_qemu_max(NONE, 1, 0, 1 << 18)[2] & 1 << 26, 0);
    }

    /// On a host that offers every bit, exactly the allow-lists and the
    /// synthesized bits remain, written out here bit by bit.
    #[test]
    fn every_passed_bit_by_bit() {
        let policy = everything(NONE);
        let leaf1 = policy.emulate(1, 0, ALL, 0);
        // SSE3 0, PCLMULQDQ 1, SSSE3 9, CX16 13, PCID 17, SSE4.1 19,
        // SSE4.2 20, MOVBE 22, POPCNT 23, AES 25, RDRAND 30, hypervisor 31.
        let ecx = 1 | 1 << 1 | 1 << 9 | 1 << 13 | 1 << 17 | 1 << 19 | 1 << 20;
        let ecx = ecx | 1 << 22 | 1 << 23 | 1 << 25 | 1 << 30 | 1 << 31;
        // FPU 0, VME 1, DE 2, PSE 3, TSC 4, MSR 5, PAE 6, CX8 8, SEP 11,
        // MTRR 12, PGE 13, CMOV 15, PAT 16, PSE36 17, CLFLUSH 19, MMX 23,
        // FXSR 24, SSE 25, SSE2 26, SS 27.
        let edx = 0x7f | 1 << 8 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 15 | 1 << 16 | 1 << 17;
        let edx = edx | 1 << 19 | 1 << 23 | 1 << 24 | 1 << 25 | 1 << 26 | 1 << 27;
        // EBX: brand and CLFLUSH kept, one logical processor, APIC ID 0.
        assert_eq!(leaf1, [!0, 0x0001_ffff, ecx, edx]);

        // EBX: FSGSBASE 0, BMI1 3, FDP 6, SMEP 7, BMI2 8, ERMS 9, INVPCID
        // 10, FCS/FDS 13, RDSEED 18, ADX 19, SMAP 20, CLFLUSHOPT 23, CLWB
        // 24, SHA 29. ECX: PREFETCHWT1 0, UMIP 2, GFNI 8, RDPID 22,
        // CLDEMOTE 25, MOVDIRI 27, MOVDIR64B 28. EDX: FSRM 4, MD_CLEAR 10,
        // SERIALIZE 14.
        let ebx = 1 | 1 << 3 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 13;
        let ebx = ebx | 1 << 18 | 1 << 19 | 1 << 20 | 1 << 23 | 1 << 24 | 1 << 29;
        let ecx = 1 | 1 << 2 | 1 << 8 | 1 << 22 | 1 << 25 | 1 << 27 | 1 << 28;
        let edx = 1 << 4 | 1 << 10 | 1 << 14;
        assert_eq!(policy.emulate(7, 0, ALL, 0), [1, ebx, ecx, edx]);
        assert_eq!(policy.emulate(7, 1, ALL, 0), [0x1c00, 0, 0, 0]);
        assert_eq!(policy.emulate(7, 2, ALL, 0), [0; 4]);

        // ECX: LahfSahf 0, ABM 5, SSE4A 6, MisAlignSse 7, 3DNowPrefetch 8,
        // TBM 21, TopoExt 22. EDX: FPU 0, VME 1, DE 2, PSE 3, TSC 4, MSR 5,
        // PAE 6, CX8 8, SYSCALL 11, MTRR 12, PGE 13, CMOV 15, PAT 16,
        // PSE36 17, NX 20, MmxExt 22, MMX 23, FXSR 24, FFXSR 25, 1G pages
        // 26, RDTSCP 27, LM 29, 3DNowExt 30, 3DNow 31.
        let ecx = 1 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 21 | 1 << 22;
        let edx = 0x7f | 1 << 8 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 15 | 1 << 16 | 1 << 17;
        let edx = edx | 1 << 20 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25 | 1 << 26 | 1 << 27;
        let edx = edx | 1 << 29 | 1 << 30 | 1 << 31;
        assert_eq!(policy.emulate(0x8000_0001, 0, ALL, 0), [!0, !0, ecx, edx]);
        // TscInvariant only.
        assert_eq!(policy.emulate(0x8000_0007, 0, ALL, 0), [0, 0, 0, 1 << 8]);
        // 36 physical bits (the host's 255 is no width), 48 linear; EBX: CLZERO 0,
        // RstrFpErrPtrs 2, WBNOINVD 9, INT_WBINVD 13, no LMSLE 20, SSB_NO
        // 26, BTC_NO 29; one core.
        let ebx = 1 | 1 << 2 | 1 << 9 | 1 << 13 | 1 << 20 | 1 << 26 | 1 << 29;
        assert_eq!(policy.emulate(0x8000_0008, 0, ALL, 0), [0x3024, ebx, 0, 0]);
        // NoNestedDataBp 0, LFENCE serializing 2, null selector 6.
        assert_eq!(policy.emulate(0x8000_0021, 0, ALL, 0), [0x45, 0, 0, 0]);
        // Nothing shares a cache.
        let cache = policy.emulate(0x8000_001d, 3, ALL, 0);
        assert_eq!(cache, [0xfc00_3fff, !0, !0, !0]);
        assert_eq!(policy.emulate(4, 0, ALL, 0), [0x3fff, !0, !0, !0]);
        // Host facts the MSR table uses.
        assert!(policy.no_execute() && policy.fast_fxsave());
    }

    #[test]
    fn hidden_leaves_are_zero_whatever_the_host_says() {
        let policy = everything(FULL);
        let hidden = [
            3,
            5,
            8,
            9,
            0xa,
            0xc,
            0xd,
            0xe,
            0xf,
            0x10,
            0x12,
            0x14,
            0x17,
            0x18,
            0x19,
            0x1a,
            0x1b,
            0x1c,
            0x1d,
            0x1e,
            0x20,
            0x23,
            0x2000_0000,
            0x8000_0009,
            0x8000_000a,
            0x8000_001b,
            0x8000_001c,
            0x8000_001f,
            0x8000_0020,
            0x8000_0022,
            0x8000_0026,
            0xc000_0000,
            0x4000_0102,
            0x4000_0200,
        ];
        for leaf in hidden {
            for subleaf in [0, 1] {
                let answer = policy.emulate(leaf, subleaf, ALL, !0);
                assert_eq!(answer, [0; 4], "leaf {leaf:#x}.{subleaf}");
            }
        }
        // Every hypervisor leaf but ours.
        assert_eq!(policy.emulate(0x4000_0002, 0, ALL, 0), [0; 4]);
        assert_eq!(policy.emulate(0x4000_00ff, 0, ALL, 0), [0; 4]);
        // Leaf 6 is ARAT alone.
        assert_eq!(policy.emulate(6, 0, ALL, 0), [1 << 2, 0, 0, 0]);
    }

    #[test]
    fn ranges_are_the_hosts_but_bounded() {
        let policy = everything(NONE);
        assert_eq!(policy.emulate(0, 0, AMD, 0), [0x1f, AMD[1], AMD[2], AMD[3]]);
        let [max, ..] = policy.emulate(0x8000_0000, 0, [0x8000_0028, 0, 0, 0], 0);
        assert_eq!(max, 0x8000_0021);
        assert!(!policy.synthetic(0x8000_0021) && policy.synthetic(0x8000_0022));
        // A small host: its leaves beyond its ranges are zero, even 0xB.
        let small = policy_on(NONE, [6, AMD[1], AMD[2], AMD[3]], 0x8000_0008, ALL);
        assert_eq!(small.emulate(0, 0, [6, 0, 0, 0], 0)[0], 6);
        assert_eq!(small.emulate(0xb, 0, ALL, 0), [0; 4]);
        assert_eq!(small.emulate(7, 0, ALL, 0), [0; 4]);
        assert_eq!(small.emulate(0x8000_0021, 0, ALL, 0), [0; 4]);
        assert!(small.emulate(0x8000_0008, 0, ALL, 0) != [0; 4]);
        // A host with no extended leaves at all.
        let none = policy_on(NONE, AMD, 0x10, ALL);
        assert_eq!(
            none.emulate(0x8000_0000, 0, [0x10, 0, 0, 0], 0)[0],
            0x8000_0000
        );
        assert_eq!(none.emulate(0x8000_0001, 0, ALL, 0), [0; 4]);
        assert_eq!(none.physical_address_bits(), 36);
        assert!(!none.no_execute());
        // Leaf 7 with no subleaf 1.
        let one = Policy::new(NONE, |leaf, _| match leaf {
            0 => AMD,
            7 => [0, !0, !0, !0],
            _ => [0x8000_0008, 0, 0, 0],
        });
        assert_eq!(one.emulate(7, 0, ALL, 0)[0], 0);
        assert_eq!(one.emulate(7, 1, ALL, 0), [0; 4]);
    }

    #[test]
    fn topology_is_one_thread_of_one_core() {
        let policy = everything(FULL);
        for leaf in [0xb, 0x1f] {
            assert_eq!(policy.emulate(leaf, 0, ALL, 0), [0, 1, 0x100, 0]);
            assert_eq!(policy.emulate(leaf, 1, ALL, 0), [0, 1, 0x201, 0]);
            assert_eq!(policy.emulate(leaf, 2, ALL, 0), [0, 0, 2, 0]);
            assert_eq!(policy.emulate(leaf, 0x1ff, ALL, 0), [0, 0, 0xff, 0]);
        }
        assert_eq!(policy.emulate(1, 0, ALL, 0)[1] >> 16, 1, "APIC ID 0, one");
        assert_eq!(policy.emulate(1, 0, ALL, 0)[3] & 1 << 28, 0, "no HTT");
        assert_eq!(policy.emulate(0x8000_001e, 0, ALL, 0), [0; 4]);
        assert_eq!(policy.emulate(0x8000_0008, 0, ALL, 0)[2], 0);
        // Without TopologyExtensions, 0x8000001D is not answered.
        let plain = Policy::new(FULL, qemu_max);
        assert!(plain.synthetic(0x8000_001d));
        assert_eq!(plain.emulate(0x8000_001d, 0, ALL, 0), [0; 4]);
    }

    #[test]
    fn vendor_specific_bits_follow_the_vendor() {
        let intel = policy_on(FULL, INTEL, 0x8000_0008, ALL);
        assert_eq!(intel.vendor(), Vendor::Intel);
        // Intel's 0x80000001 EDX has SYSCALL, NX, 1G pages, RDTSCP, LM only.
        let edx = 1 << 11 | 1 << 20 | 1 << 26 | 1 << 27 | 1 << 29;
        assert_eq!(intel.emulate(0x8000_0001, 0, ALL, 0)[3], edx);
        assert_eq!(intel.emulate(0x8000_0008, 0, ALL, 0)[1] & 1 << 20, 0);
        assert!(!intel.fast_fxsave());
        let hygon = [
            0xd,
            u32::from_le_bytes(*b"Hygo"),
            u32::from_le_bytes(*b"uine"),
            u32::from_le_bytes(*b"nGen"),
        ];
        assert_eq!(
            policy_on(NONE, hygon, 0x8000_0008, ALL).vendor(),
            Vendor::Amd
        );
        let other = [0xd, 1, 2, 3];
        assert_eq!(
            policy_on(NONE, other, 0x8000_0008, ALL).vendor(),
            Vendor::Other
        );
    }

    #[test]
    fn hypervisor_leaves_carry_the_signature() {
        let policy = everything(NONE);
        let [max, b, c, d] = policy.emulate(CPUID_BASE, 0, [0; 4], 0);
        assert_eq!(max, CPUID_FEATURES);
        let mut signature = Vec::new();
        for word in [b, c, d] {
            signature.extend_from_slice(&word.to_le_bytes());
        }
        assert_eq!(signature, b"MicrovisorHV");
        assert_eq!(
            policy.emulate(CPUID_FEATURES, 0, [9; 4], 0),
            [features::ALL, INTERFACE_VERSION, 0, 0]
        );
        assert!(policy.synthetic(CPUID_BASE) && !policy.synthetic(1));
        // No paravirtual clock on this platform: KVM's range is empty.
        assert_eq!(policy.emulate(kvm::CPUID_BASE, 0, ALL, 0), [0; 4]);
        assert_eq!(policy.emulate(kvm::CPUID_FEATURES, 0, ALL, 0), [0; 4]);
    }

    #[test]
    fn the_paravirtual_clock_is_found_as_linux_looks_for_it() {
        let policy = everything(FULL);
        // Linux's hypervisor_cpuid_base: every 0x100 from 0x40000000.
        let found = (0x4000_0000u32..0x4001_0000).step_by(0x100).find(|&base| {
            let [_, b, c, d] = policy.emulate(base, 0, ALL, 0);
            let mut signature = [0u8; 12];
            signature[..4].copy_from_slice(&b.to_le_bytes());
            signature[4..8].copy_from_slice(&c.to_le_bytes());
            signature[8..].copy_from_slice(&d.to_le_bytes());
            &signature == b"KVMKVMKVM\0\0\0"
        });
        assert_eq!(found, Some(kvm::CPUID_BASE));
        assert_eq!(
            policy.emulate(kvm::CPUID_BASE, 0, ALL, 0)[0],
            kvm::CPUID_FEATURES
        );
        // Clock (bit 3), stable (24), no port-0x80 delay (1); nothing else.
        assert_eq!(
            policy.emulate(kvm::CPUID_FEATURES, 0, ALL, 0),
            [1 << 1 | 1 << 3 | 1 << 24, 0, 0, 0]
        );
        assert!(policy.synthetic(kvm::CPUID_BASE));
        // Our own leaves are still first.
        assert_eq!(policy.emulate(CPUID_BASE, 0, ALL, 0)[0], CPUID_FEATURES);
    }

    #[test]
    fn vmx_and_svm_are_hidden() {
        let policy = everything(FULL);
        assert_eq!(policy.emulate(1, 0, ALL, !0)[2] & 1 << 5, 0);
        assert_eq!(policy.emulate(0x8000_0001, 0, ALL, !0)[2] & 1 << 2, 0);
        assert!(policy.synthetic(0x8000_000a));
    }

    fn any_platform() -> impl Strategy<Value = PlatformFeatures> {
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(apic, x2apic, tsc_deadline, pvclock)| PlatformFeatures {
                apic,
                x2apic,
                tsc_deadline,
                pvclock,
            },
        )
    }

    proptest! {
        /// A synthetic leaf never depends on the host's answer, so the
        /// caller may skip executing CPUID for it.
        #[test]
        fn synthetic_leaves_ignore_the_host(
            platform in any_platform(),
            host in any::<[u32; 4]>(),
            leaf in prop_oneof![0u32..0x40, 0x4000_0000u32..0x4000_0110, 0x8000_0000u32..0x8000_0030, any::<u32>()],
            subleaf in 0u32..4,
            first in any::<[u32; 4]>(),
            second in any::<[u32; 4]>(),
            cr4 in any::<u64>(),
        ) {
            let policy = policy_on(platform, [host[0], AMD[1], AMD[2], AMD[3]], host[1], host);
            if policy.synthetic(leaf) {
                prop_assert_eq!(
                    policy.emulate(leaf, subleaf, first, cr4),
                    policy.emulate(leaf, subleaf, second, cr4)
                );
            }
        }

        /// The table answers exactly as the policy does, whatever the
        /// subleaf and CR4, on a host whose answers vary with the leaf, and
        /// with the subleaf for every leaf the manuals index by subleaf;
        /// and it holds the leaves it must.
        #[test]
        fn answers_agree_with_the_policy(
            platform in any_platform(),
            seed in any::<u64>(),
            max_basic in 0u32..0x30,
            max_extended in 0x8000_0000u32..0x8000_0030,
        ) {
            let host = |leaf: u32, subleaf: u32| {
                // Intel's SDM and AMD's APM: the leaves with subleaves.
                let indexed = matches!(
                    leaf,
                    4 | 7 | 0xb | 0xd | 0xf | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 | 0x1b | 0x1d
                        | 0x1f | 0x20 | 0x23 | 0x24 | 0x8000_001d | 0x8000_0020 | 0x8000_0026
                );
                let subleaf = if indexed { subleaf } else { 0 };
                let mix = |i: u64| {
                    let x = (u64::from(leaf) << 32 | u64::from(subleaf)) ^ seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    (x.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 29) as u32
                };
                match leaf {
                    0 => [max_basic, AMD[1], AMD[2], AMD[3]],
                    EXTENDED_BASE => [max_extended, mix(1), mix(2), mix(3)],
                    _ => [mix(0), mix(1), mix(2), mix(3)],
                }
            };
            let policy = Policy::new(platform, host);
            let answers = Answers::new(&policy, host);
            let leaves = (0..0x40)
                .chain(0x4000_0000..0x4000_0110)
                .chain(0x8000_0000..0x8000_0030)
                .chain([0x2000_0000, 0xc000_0000, u32::MAX]);
            for leaf in leaves {
                let Some(&answer) = answers.get(leaf) else {
                    continue;
                };
                for subleaf in [0, 1, 2, 3, 0x20, u32::MAX] {
                    for cr4 in [0, CR4_OSXSAVE, CR4_PKE, CR4_OSXSAVE | CR4_PKE, u64::MAX] {
                        let native = if policy.synthetic(leaf) { [0; 4] } else { host(leaf, subleaf) };
                        prop_assert_eq!(
                            answer,
                            policy.emulate(leaf, subleaf, native, cr4),
                            "leaf {:#x} subleaf {:#x} cr4 {:#x}", leaf, subleaf, cr4
                        );
                    }
                }
            }
            // The commonest leaves are in the table.
            for leaf in [0, CPUID_BASE, CPUID_FEATURES, kvm::CPUID_BASE, EXTENDED_BASE] {
                prop_assert!(answers.get(leaf).is_some(), "leaf {:#x}", leaf);
            }
        }

        /// Whatever the host offers, the hidden features stay hidden.
        #[test]
        fn hidden_features_never_appear(
            platform in any_platform(),
            native in any::<[u32; 4]>(),
            cr4 in any::<u64>(),
        ) {
            let policy = everything(platform);
            let [_, _, ecx, edx] = policy.emulate(1, 0, native, cr4);
            // MONITOR 3, VMX 5, SMX 6, EIST 7, FMA 12, PDCM 15, XSAVE 26,
            // AVX 28, F16C 29; MCE 7, MCA 14, DS 21, ACPI 22, HTT 28.
            prop_assert_eq!(ecx & (1 << 3 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 12 | 1 << 15), 0);
            prop_assert_eq!(ecx & (1 << 26 | 1 << 28 | 1 << 29), 0);
            prop_assert_eq!(edx & (1 << 7 | 1 << 14 | 1 << 21 | 1 << 22 | 1 << 28), 0);
            let [_, ebx, ecx, edx] = policy.emulate(7, 0, native, cr4);
            // SGX 2, HLE 4, AVX2 5, RTM 11, MPX 14, AVX512F 16, PT 25.
            prop_assert_eq!(ebx & (1 << 2 | 1 << 4 | 1 << 5 | 1 << 11 | 1 << 14 | 1 << 16 | 1 << 25), 0);
            // PKU 3, WAITPKG 5, LA57 16, SGX_LC 30, PKS 31.
            prop_assert_eq!(ecx & (1 << 3 | 1 << 5 | 1 << 16 | 1 << 30 | 1 << 31), 0);
            // HYBRID 15, PCONFIG 18, IBRS/IBPB 26, STIBP 27, ARCH_CAP 29, SSBD 31.
            prop_assert_eq!(edx & (1 << 15 | 1 << 18 | 1 << 26 | 1 << 27 | 1 << 29 | 1 << 31), 0);
            let [_, _, ecx, _] = policy.emulate(0x8000_0001, 0, native, cr4);
            // SVM 2, OSVW 9, IBS 10, XOP 11, NodeId 19, PerfCtrExtCore 23,
            // PerfCtrExtNB 24, PerfCtrExtLLC 28, MONITORX 29.
            prop_assert_eq!(ecx & (1 << 2 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 19), 0);
            prop_assert_eq!(ecx & (1 << 23 | 1 << 24 | 1 << 28 | 1 << 29), 0);
            // IBPB 12, IBRS 14, STIBP 15, AMD_SSBD 24, VIRT_SSBD 25.
            let [_, ebx, _, _] = policy.emulate(0x8000_0008, 0, native, cr4);
            prop_assert_eq!(ebx & (1 << 12 | 1 << 14 | 1 << 15 | 1 << 24 | 1 << 25), 0);
        }
    }
}
