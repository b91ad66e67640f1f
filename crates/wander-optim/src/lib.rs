//! AdamW (Loshchilov and Hutter, ICLR 2019) on candle tensors: Adam's bias-corrected moments
//! plus decoupled weight decay, with a learning rate per tensor (parameter groups: the
//! alignment model's head learns faster than its adapter) and a state that a checkpoint
//! saves and restores exactly, so a resumed training continues bit for bit.
//!
//! Both of wander's trainers use it: LoRA fine-tuning of the LLM (betas 0.9/0.999, eps
//! 1e-8) and SASRec (0.9/0.98, 1e-9, as in the SASRec paper), each with its own
//! [`AdamWConfig`].
#![deny(missing_docs)]

use candle_core::{Result, Tensor, Var};

/// The optimizer's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the second moment's root.
    pub eps: f64,
    /// Decoupled weight decay: each step multiplies a tensor by `1 - lr * weight_decay`.
    pub weight_decay: f64,
}

/// AdamW's state for a fixed list of tensors.
#[derive(Debug, Clone)]
pub struct AdamW {
    cfg: AdamWConfig,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: usize,
}

impl AdamW {
    /// Zero moments for `params`.
    pub fn new(params: &[Var], cfg: AdamWConfig) -> Result<Self> {
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        Ok(AdamW {
            cfg,
            m: params.iter().map(zeros).collect::<Result<_>>()?,
            v: params.iter().map(zeros).collect::<Result<_>>()?,
            t: 0,
        })
    }

    /// Its constants.
    pub fn config(&self) -> AdamWConfig {
        self.cfg
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.t
    }

    /// One step: `grad(i)` is the gradient of `params[i]` (`None` leaves that tensor and
    /// its moments as they are), `lr[i]` its learning rate.
    pub fn step(
        &mut self,
        params: &[Var],
        grad: impl Fn(usize) -> Option<Tensor>,
        lr: &[f64],
    ) -> Result<()> {
        if params.len() != self.m.len() || lr.len() != params.len() {
            candle_core::bail!(
                "AdamW holds {} tensors; the step got {} tensors and {} learning rates",
                self.m.len(),
                params.len(),
                lr.len()
            );
        }
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        self.t += 1;
        let c1 = 1.0 - beta1.powi(self.t as i32);
        let c2 = 1.0 - beta2.powi(self.t as i32);
        for (i, p) in params.iter().enumerate() {
            let Some(g) = grad(i) else {
                continue;
            };
            // Gradients carry the op graph of their step; without detaching, the moments
            // would chain every step's graph together and memory would grow without bound.
            let g = g.detach();
            self.m[i] = ((&self.m[i] * beta1)? + (&g * (1.0 - beta1))?)?.detach();
            self.v[i] = ((&self.v[i] * beta2)? + (g.sqr()? * (1.0 - beta2))?)?.detach();
            let update = ((&self.m[i] / c1)? / ((&self.v[i] / c2)?.sqrt()? + eps)?)?;
            let kept = if weight_decay == 0.0 {
                p.as_tensor().clone()
            } else {
                (p.as_tensor() * (1.0 - lr[i] * weight_decay))?
            };
            p.set(&(kept - (update * lr[i])?)?)?;
        }
        Ok(())
    }

    /// The first and second moments, by tensor, for a checkpoint.
    pub fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.m, &self.v)
    }

    /// Restores a checkpoint's state: `steps` taken and the moments; each moment must have
    /// its tensor's shape.
    pub fn restore(&mut self, steps: usize, m: Vec<Tensor>, v: Vec<Tensor>) -> Result<()> {
        for (name, new, old) in [("first", &m, &self.m), ("second", &v, &self.v)] {
            if new.len() != old.len() {
                candle_core::bail!(
                    "checkpoint has {} {name} moments, the optimizer {} tensors",
                    new.len(),
                    old.len()
                );
            }
            if let Some(i) = (0..new.len()).find(|&i| new[i].dims() != old[i].dims()) {
                candle_core::bail!(
                    "checkpoint's {name} moment {i} has shape {:?}, the tensor {:?}",
                    new[i].dims(),
                    old[i].dims()
                );
            }
        }
        self.t = steps;
        self.m = m;
        self.v = v;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    const CFG: AdamWConfig = AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };

    fn quadratic_grad(p: &Var) -> Tensor {
        // d/dx of (x - 3)^2
        ((p.as_tensor() - 3.0).unwrap() * 2.0).unwrap()
    }

    #[test]
    fn the_first_step_moves_each_tensor_by_its_own_learning_rate() {
        let a = Var::new(&[0f32, 0.0], &Device::Cpu).unwrap();
        let b = Var::new(&[0f32], &Device::Cpu).unwrap();
        let params = vec![a.clone(), b.clone()];
        let mut opt = AdamW::new(&params, CFG).unwrap();
        opt.step(&params, |i| Some(quadratic_grad(&params[i])), &[0.1, 0.01])
            .unwrap();
        // Bias-corrected, the first update is lr * g / (|g| + eps): lr towards the minimum.
        let a1 = a.as_tensor().to_vec1::<f32>().unwrap();
        let b1 = b.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (a1[0] - 0.1).abs() < 1e-6 && (a1[1] - 0.1).abs() < 1e-6,
            "{a1:?}"
        );
        assert!((b1[0] - 0.01).abs() < 1e-6, "{b1:?}");
    }

    #[test]
    fn it_converges_and_decay_pulls_towards_zero() {
        let run = |wd: f64| {
            let x = Var::new(&[0f32], &Device::Cpu).unwrap();
            let params = vec![x.clone()];
            let cfg = AdamWConfig {
                weight_decay: wd,
                ..CFG
            };
            let mut opt = AdamW::new(&params, cfg).unwrap();
            for _ in 0..2000 {
                opt.step(&params, |_| Some(quadratic_grad(&x)), &[0.05])
                    .unwrap();
            }
            x.as_tensor().to_vec1::<f32>().unwrap()[0]
        };
        let plain = run(0.0);
        assert!((plain - 3.0).abs() < 0.05, "{plain}");
        assert!(run(1.0) < plain - 0.1, "weight decay lowers the optimum");
    }

    #[test]
    fn a_missing_gradient_leaves_the_tensor_and_its_moments() {
        let a = Var::new(&[1f32], &Device::Cpu).unwrap();
        let params = vec![a.clone()];
        let mut opt = AdamW::new(&params, CFG).unwrap();
        opt.step(&params, |_| None, &[0.1]).unwrap();
        assert_eq!(a.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0]);
        assert_eq!(opt.moments().0[0].to_vec1::<f32>().unwrap(), vec![0.0]);
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn a_restored_state_continues_exactly() {
        let init = [0.5f32, -1.0, 2.0];
        let go = |steps: usize, resume_at: Option<usize>| {
            let x = Var::new(&init, &Device::Cpu).unwrap();
            let params = vec![x.clone()];
            let mut opt = AdamW::new(&params, CFG).unwrap();
            for s in 0..steps {
                if Some(s) == resume_at {
                    let (m, v) = opt.moments();
                    let (m, v) = (m.to_vec(), v.to_vec());
                    let saved = x.as_tensor().copy().unwrap();
                    let fresh = Var::new(&init, &Device::Cpu).unwrap();
                    fresh.set(&saved).unwrap();
                    let mut again = AdamW::new(&[fresh], CFG).unwrap();
                    again.restore(opt.steps(), m, v).unwrap();
                    opt = again;
                }
                opt.step(&params, |_| Some(quadratic_grad(&x)), &[0.01])
                    .unwrap();
            }
            x.as_tensor().to_vec1::<f32>().unwrap()
        };
        assert_eq!(go(20, None), go(20, Some(7)));
        let mut opt = AdamW::new(&[Var::new(&[0f32], &Device::Cpu).unwrap()], CFG).unwrap();
        let wrong = Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = opt
            .restore(3, vec![wrong.clone()], vec![wrong])
            .unwrap_err()
            .to_string();
        assert!(err.contains("shape [2], the tensor [1]"), "{err}");
    }
}
