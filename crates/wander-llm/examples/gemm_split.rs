use std::time::Instant;
const SHAPES: [(usize, usize); 4] = [(576, 576), (576, 192), (576, 1536), (1536, 576)];
fn xwt(x: &[f32], w: &[f32], dst: &mut [f32], rows: usize, inp: usize, out: usize, par: gemm::Parallelism) {
    unsafe {
        gemm::gemm(rows, out, inp, dst.as_mut_ptr(), 1, out as isize, false, x.as_ptr(), 1, inp as isize,
            w.as_ptr(), inp as isize, 1, 0.0, 1.0, false, false, false, par);
    }
}
fn main() {
    for m in [1usize, 16, 67, 300, 512] {
        let mut res = vec![];
        for mode in 0..3 {
            let mut secs = 0.0; let mut flops = 0.0;
            for (k, n) in SHAPES {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
                let w: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 1000) as f32 / 1000.0).collect();
                let mut dst = vec![0f32; m * n];
                let macs = m * k * n;
                let reps = ((2e8 / macs as f64).ceil() as usize).max(3);
                let mut run = |dst: &mut [f32]| match mode {
                    0 => xwt(&x, &w, dst, m, k, n, gemm::Parallelism::Rayon(2)),
                    1 => xwt(&x, &w, dst, m, k, n, gemm::Parallelism::None),
                    _ => {
                        // two halves of the output columns, one per thread
                        let h = n / 2;
                        let (a, b) = dst.split_at_mut(m * n / 2); let _ = (a, b);
                        let ptr = dst.as_mut_ptr() as usize;
                        rayon::join(
                            || unsafe { gemm::gemm(m, h, k, ptr as *mut f32, 1, n as isize, false, x.as_ptr(), 1, k as isize, w.as_ptr(), k as isize, 1, 0.0, 1.0, false, false, false, gemm::Parallelism::None) },
                            || unsafe { gemm::gemm(m, n - h, k, (ptr as *mut f32).add(h), 1, n as isize, false, x.as_ptr(), 1, k as isize, w.as_ptr().add(h * k), k as isize, 1, 0.0, 1.0, false, false, false, gemm::Parallelism::None) },
                        );
                    }
                };
                run(&mut dst);
                let t = Instant::now();
                for _ in 0..reps { run(&mut dst); }
                secs += t.elapsed().as_secs_f64() / reps as f64;
                flops += 2.0 * macs as f64;
            }
            res.push(flops / secs / 1e9);
        }
        println!("rows {m}: rayon2 {:.1}  none {:.1}  split2 {:.1}", res[0], res[1], res[2]);
    }
}
