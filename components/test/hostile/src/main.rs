//! A component that attacks the core: random system-call numbers, random
//! arguments, random capability handles, pointers into the core and into
//! nothing. Each call is announced on the `progress` queue first, so the
//! monitor can count calls across the many lives this component has (most
//! attacks end it with a fault, and the monitor restarts it). The random
//! stream is seeded by the generation, so every life attacks differently.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use runtime::arguments::OrExit;
use runtime::queue::Sender;
use runtime::syscall;

runtime::component!(main);

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[(self.next() % choices.len() as u64) as usize]
    }
}

fn main(start: &runtime::Start) -> i32 {
    start.arguments(&[]).or_exit();
    let Ok(mut progress) = Sender::<u64>::open(start, "progress") else {
        runtime::println!("no 'progress' queue was given");
        return 1;
    };
    let mut random = Random(
        0x9e37_79b9_7f4a_7c15 ^ u64::from(start.generation()).wrapping_mul(0xff51_afd7_ed55_8ccd),
    );
    let own_handles: [u64; 4] =
        core::array::from_fn(|slot| slot as u64 | (u64::from(start.generation()) << 32));
    let mut buffer = [b' '; 64];
    buffer[..13].copy_from_slice(b"hostile probe");
    let mut call = 0u64;
    loop {
        call += 1;
        if progress.send(&call).is_err() {
            return 1;
        }
        let pointers = [
            0,
            0x1000,
            0x1000_0000,
            buffer.as_ptr() as u64,
            buffer.as_ptr() as u64 + 4000,
            0xffff_8000_0000_0000,
            0xffff_ffff_8020_0000,
            0x0000_8000_0000_0000,
            u64::MAX - 8,
            random.next(),
        ];
        let handles = [
            own_handles[0],
            own_handles[1],
            own_handles[2],
            own_handles[3],
            own_handles[0],
            own_handles[1],
            random.next(),
            random.next() & 0xffff,
            u64::MAX,
        ];
        let numbers = [
            0,
            2,
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12,
            1,
            4,
            13,
            14,
            0xdead,
            random.next(),
        ];
        // Mostly well-formed but hostile calls; now and then pure noise.
        let args = if random.next().is_multiple_of(8) {
            [
                random.next(),
                random.next(),
                random.next(),
                random.next(),
                random.next(),
            ]
        } else {
            [
                random.pick(&handles),
                random.pick(&pointers),
                random.next() % 600,
                random.next() % 20_000,
                random.next() % 300,
            ]
        };
        let number = random.pick(&numbers);
        match number {
            // Log writes print whatever they are given: keep them rare and
            // short; the others become null calls.
            1 if !random.next().is_multiple_of(64) => {
                syscall::null();
            }
            1 => {
                let _ = syscall::raw(1, [buffer.as_ptr() as u64, 13, 0, 0, 0]);
            }
            // Waits: never long, so the monitor keeps control.
            6 => {
                let _ = syscall::raw(6, [random.next() % 2_000, 0, 0, 0, 0]);
            }
            13 => {
                let _ = syscall::raw(13, [args[0], random.next() % 2_000, 0, 0, 0]);
            }
            // Exit would end the test early; turn it into a yield.
            3 => syscall::yield_now(),
            _ => {
                let _ = syscall::raw(number, args);
            }
        }
    }
}
