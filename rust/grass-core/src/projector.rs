//! [`Projector`]: every projector kind, declared once. The enum, its [`Projection`] dispatch,
//! the `From` conversions and the kind names are all generated from the one list at the bottom
//! of this file; the Python binding and the CUDA path dispatch on this enum.
use crate::dense::Dense;
use crate::elem::{Accum, Load};
use crate::error::Result;
use crate::grass::Grass;
use crate::mask::Mask;
use crate::projection::Projection;
use crate::sjlt::Sjlt;
use crate::srht::Srht;

/// Declares [`Projector`] from `Variant(Type)` pairs.
macro_rules! projectors {
    ($($(#[$doc:meta])* $kind:ident($ty:ty)),+ $(,)?) => {
        /// Any projector, as one type.
        #[derive(Debug, Clone)]
        pub enum Projector {
            $($(#[$doc])* $kind($ty),)+
        }

        $(impl From<$ty> for Projector {
            fn from(p: $ty) -> Self {
                Self::$kind(p)
            }
        })+

        impl Projector {
            /// The kind's name (`"Sjlt"`, `"Mask"`, …).
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $(Self::$kind(_) => stringify!($kind),)+
                }
            }
        }

        impl Projection for Projector {
            fn in_dim(&self) -> usize {
                match self {
                    $(Self::$kind(p) => p.in_dim(),)+
                }
            }
            fn out_dim(&self) -> usize {
                match self {
                    $(Self::$kind(p) => p.out_dim(),)+
                }
            }
            fn project_batch<T: Load<A>, A: Accum>(
                &self,
                x: &[T],
                batch: usize,
                out: &mut [A],
            ) -> Result<()> {
                match self {
                    $(Self::$kind(p) => p.project_batch(x, batch, out),)+
                }
            }
            fn transpose_batch<A: Accum>(&self, y: &[A], batch: usize, out: &mut [A]) -> Result<()> {
                match self {
                    $(Self::$kind(p) => p.transpose_batch(y, batch, out),)+
                }
            }
        }
    };
}

projectors! {
    /// Sparse JL transform.
    Sjlt(Sjlt),
    /// Coordinate mask.
    Mask(Mask),
    /// GraSS (SJLT ∘ mask).
    Grass(Grass),
    /// Dense Gaussian / Rademacher.
    Dense(Dense),
    /// Subsampled randomized Hadamard transform.
    Srht(Srht),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_matches_the_concrete_projector() {
        let s = Sjlt::new(100, 8, 2, 3).unwrap();
        let any = Projector::from(s.clone());
        assert_eq!(
            (any.in_dim(), any.out_dim(), any.kind_name()),
            (100, 8, "Sjlt")
        );
        let x: Vec<f32> = (0..300).map(|i| (i % 7) as f32 - 3.0).collect();
        let (mut a, mut b) = (vec![0f32; 24], vec![0f32; 24]);
        s.project(&x, 3, &mut a).unwrap();
        any.project(&x, 3, &mut b).unwrap();
        assert_eq!(a, b);
        assert!(matches!(
            any.project(&x[..299], 3, &mut b),
            Err(crate::Error::Shape { what: "x", .. })
        ));
    }
}
