//! What a guest sees of CPUID: the host's answer with the hypervisor bit
//! set, virtualization extensions hidden (there is no nested
//! virtualization), and our leaves at [`guest_api::CPUID_BASE`].

use guest_api::{
    CPUID_1_ECX_HYPERVISOR, CPUID_BASE, CPUID_FEATURES, CPUID_MAX, INTERFACE_VERSION, SIGNATURE,
    features,
};

/// The guest's CPUID result for `leaf` given the host's `native` answer
/// (`[eax, ebx, ecx, edx]`).
pub fn emulate(leaf: u32, native: [u32; 4]) -> [u32; 4] {
    let [eax, ebx, ecx, edx] = native;
    let word =
        |i: usize| u32::from_le_bytes(SIGNATURE[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4]));
    match leaf {
        // Hypervisor present; no VMX (bit 5) for the guest.
        1 => [eax, ebx, (ecx | CPUID_1_ECX_HYPERVISOR) & !(1 << 5), edx],
        CPUID_BASE => [CPUID_MAX, word(0), word(1), word(2)],
        CPUID_FEATURES => [features::ALL, INTERFACE_VERSION, 0, 0],
        0x4000_0002..=0x4000_00ff => [0; 4],
        // No SVM (bit 2) for the guest.
        0x8000_0001 => [eax, ebx, ecx & !(1 << 2), edx],
        // The SVM feature leaf.
        0x8000_000a => [0; 4],
        _ => native,
    }
}

/// Whether `leaf` is answered without asking the host.
pub fn synthetic(leaf: u32) -> bool {
    matches!(leaf, CPUID_BASE..=0x4000_00ff | 0x8000_000a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypervisor_leaves_carry_the_signature() {
        let [max, b, c, d] = emulate(CPUID_BASE, [0; 4]);
        assert_eq!(max, CPUID_FEATURES);
        let mut signature = Vec::new();
        for word in [b, c, d] {
            signature.extend_from_slice(&word.to_le_bytes());
        }
        assert_eq!(signature, b"MicrovisorHV");
        assert_eq!(
            emulate(CPUID_FEATURES, [9; 4]),
            [features::ALL, INTERFACE_VERSION, 0, 0]
        );
        assert!(synthetic(CPUID_BASE) && !synthetic(1));
    }

    #[test]
    fn leaf_one_says_hypervisor_and_hides_vmx_and_svm() {
        let [_, _, ecx, _] = emulate(1, [0, 0, 1 << 5 | 1, 0]);
        assert_eq!(ecx, CPUID_1_ECX_HYPERVISOR | 1);
        let [_, _, ecx, _] = emulate(0x8000_0001, [0, 0, 0b111, 0]);
        assert_eq!(ecx, 0b011);
        assert_eq!(emulate(0, [7, 1, 2, 3]), [7, 1, 2, 3]);
    }
}
