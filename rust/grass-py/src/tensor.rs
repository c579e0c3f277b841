//! Borrowing tensors through DLPack: any object with `__dlpack__` (torch tensors, numpy arrays).
//!
//! Contract: a [`TensorView`] holds the DLPack capsule it was read from, and the capsule keeps
//! the producer's `DLManagedTensor` (and so the memory) alive; the view is used only while the
//! Python object passed in is referenced by the caller's frame. The capsule is not consumed
//! (its name stays `dltensor`), so its destructor calls the producer's deleter when dropped.
use crate::errors::{type_error, value_error};
use grass_core::ElemType;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use std::ffi::{c_void, CStr};

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DLDevice {
    pub(crate) device_type: i32,
    pub(crate) device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DLDataType {
    pub(crate) code: u8,
    pub(crate) bits: u8,
    pub(crate) lanes: u16,
}

#[repr(C)]
pub(crate) struct DLTensor {
    pub(crate) data: *mut c_void,
    pub(crate) device: DLDevice,
    pub(crate) ndim: i32,
    pub(crate) dtype: DLDataType,
    pub(crate) shape: *const i64,
    pub(crate) strides: *const i64,
    pub(crate) byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

const DL_CPU: i32 = 1;
const DL_CUDA: i32 = 2;

/// Runs `$body` with the Rust types `$t` (input element) and `$a` (accumulator / output) bound
/// for the CPU dtype pair `($input, $output)` (checked by [`check_io`] first: float16 / bfloat16 /
/// float32 → float32, float64 → float64).
macro_rules! with_io_types {
    ($input:expr, $output:expr, |$t:ident, $a:ident| $body:expr) => {{
        use grass_core::ElemType;
        match $crate::tensor::check_io($input, $output)? {
            ElemType::F32 => {
                type $t = f32;
                type $a = f32;
                $body
            }
            ElemType::F16 => {
                type $t = half::f16;
                type $a = f32;
                $body
            }
            ElemType::BF16 => {
                type $t = half::bf16;
                type $a = f32;
                $body
            }
            ElemType::F64 => {
                type $t = f64;
                type $a = f64;
                $body
            }
        }
    }};
}
pub(crate) use with_io_types;

/// The element type of a DLPack dtype, if grass-rs reads it.
fn elem_type(t: DLDataType) -> Option<ElemType> {
    match (t.code, t.bits, t.lanes) {
        (2, 16, 1) => Some(ElemType::F16),
        (4, 16, 1) => Some(ElemType::BF16),
        (2, 32, 1) => Some(ElemType::F32),
        (2, 64, 1) => Some(ElemType::F64),
        _ => None,
    }
}

/// Checks the projection's dtype rule (`out` is the accumulator type of the input) and returns
/// the input type.
///
/// # Errors
/// `GrassTypeError` otherwise.
pub fn check_io(input: ElemType, out: ElemType) -> PyResult<ElemType> {
    if out == input.accum() {
        Ok(input)
    } else {
        Err(type_error(
            "`out` must be float64 for float64 input, float32 otherwise",
        ))
    }
}

/// Checks the adjoint's dtype rule (`y` and `out` both float32 or both float64).
///
/// # Errors
/// `GrassTypeError` otherwise.
pub fn check_adjoint(y: ElemType, out: ElemType) -> PyResult<ElemType> {
    if y == out && y.is_accum() {
        Ok(y)
    } else {
        Err(type_error(
            "`y` and `out` must both be float32 or both float64",
        ))
    }
}

/// A borrowed, C-contiguous 2-D tensor (CPU or CUDA) and the capsule that keeps it alive.
pub struct TensorView<'py> {
    _capsule: Bound<'py, PyAny>,
    /// Address of the first element (`data + byte_offset`).
    pub ptr: u64,
    pub rows: usize,
    pub cols: usize,
    pub dtype: ElemType,
    /// DLPack device id (the CUDA ordinal for CUDA tensors).
    pub device: i32,
}

impl TensorView<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// The byte range `[start, end)` the tensor occupies.
    pub fn span(&self) -> (u64, u64) {
        (self.ptr, self.ptr + (self.len() * self.dtype.size()) as u64)
    }

    /// Fails unless the tensor has `cols` columns (and `rows` rows when given).
    pub fn check_shape(&self, name: &str, rows: Option<usize>, cols: usize) -> PyResult<()> {
        if self.cols != cols {
            return Err(value_error(format!(
                "`{name}` must have {cols} columns, got {}",
                self.cols
            )));
        }
        match rows {
            Some(r) if self.rows != r => Err(value_error(format!(
                "`{name}` must have {r} rows, got {}",
                self.rows
            ))),
            _ => Ok(()),
        }
    }

    /// Reinterprets the memory (a CPU tensor's) as a slice of `T`.
    ///
    /// # Safety
    /// `T` must be the Rust type of `self.dtype`, the tensor must be on the CPU, and the caller
    /// must not create overlapping mutable views of the same memory.
    pub unsafe fn slice<'a, T>(&self) -> &'a [T] {
        if self.len() == 0 {
            return &[];
        }
        // SAFETY: the producer guarantees `len` contiguous elements at `ptr` (checked in
        // `borrow_raw`), alive as long as the capsule, which outlives this call.
        unsafe { std::slice::from_raw_parts(self.ptr as usize as *const T, self.len()) }
    }

    /// Reinterprets the memory (a CPU tensor's) as a mutable slice of `T`.
    ///
    /// # Safety
    /// As [`Self::slice`], and no other view of this memory may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut<'a, T>(&self) -> &'a mut [T] {
        if self.len() == 0 {
            return &mut [];
        }
        // SAFETY: as in `slice`; exclusivity is the caller's obligation (checked by `disjoint`).
        unsafe { std::slice::from_raw_parts_mut(self.ptr as usize as *mut T, self.len()) }
    }
}

/// A validated 2-D, C-contiguous DLPack tensor and the capsule that keeps it alive.
struct RawTensor<'py> {
    pub capsule: Bound<'py, PyAny>,
    /// Address of the first element (`data + byte_offset`).
    pub ptr: u64,
    pub rows: usize,
    pub cols: usize,
    pub dtype: DLDataType,
    pub device_id: i32,
}

fn device_name(device_type: i32) -> &'static str {
    match device_type {
        DL_CPU => "CPU",
        DL_CUDA => "CUDA",
        _ => "unsupported-device",
    }
}

/// `torch.Tensor` and `torch.utils.dlpack.to_dlpack`, set once torch has been imported.
static TORCH: PyOnceLock<(Py<PyType>, Py<PyAny>)> = PyOnceLock::new();

/// [`TORCH`], looked up on the first call after torch was imported (a numpy-only caller never
/// imports it; `None` until then).
fn torch_exporter(py: Python<'_>) -> Option<&(Py<PyType>, Py<PyAny>)> {
    if let Some(t) = TORCH.get(py) {
        return Some(t);
    }
    let modules = py
        .import(intern!(py, "sys"))
        .ok()?
        .getattr("modules")
        .ok()?;
    let torch = modules.get_item("torch").ok()?;
    let tensor = torch.getattr("Tensor").ok()?.cast_into::<PyType>().ok()?;
    let f = py
        .import(intern!(py, "torch.utils.dlpack"))
        .ok()?
        .getattr("to_dlpack")
        .ok()?;
    Some(TORCH.get_or_init(py, || (tensor.unbind(), f.unbind())))
}

/// `obj`'s DLPack capsule from torch's own exporter, `torch.utils.dlpack.to_dlpack`, when `obj` is
/// exactly a `torch.Tensor` that does not require grad; `None` means: ask `obj.__dlpack__()`.
///
/// `Tensor.__dlpack__` is a Python function whose checks (grad, conjugate bits, the stream and
/// version arguments) end in the same exporter: ~7 µs a call on a 2-core VM against ~1 µs, paid
/// for each tensor of each call. The checks that matter here are kept: a tensor that requires
/// grad goes the `__dlpack__` way (which refuses it, as before), and conjugate/negative bits only
/// exist on complex tensors, which are refused by dtype. On CUDA, `to_dlpack` does not
/// synchronize, as `__dlpack__(stream=-1)` does not.
fn torch_capsule<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    let py = obj.py();
    let (tensor, to_dlpack) = torch_exporter(py)?;
    if !obj.get_type().is(tensor.bind(py)) {
        return None;
    }
    if obj
        .getattr(intern!(py, "requires_grad"))
        .ok()?
        .is_truthy()
        .ok()?
    {
        return None;
    }
    to_dlpack.bind(py).call1((obj,)).ok()
}

/// Borrows `obj` through `__dlpack__(**kwargs)` (falling back to no arguments) as a 2-D
/// C-contiguous tensor on a device of DLPack type `want` (`DL_CPU` or `DL_CUDA`).
fn borrow_raw<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    want: i32,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<RawTensor<'py>> {
    let capsule = match torch_capsule(obj) {
        Some(c) => c,
        None => match kwargs {
            Some(kw) => obj
                .call_method("__dlpack__", (), Some(kw))
                .or_else(|_| obj.call_method0("__dlpack__")),
            None => obj.call_method0("__dlpack__"),
        }
        .map_err(|e| type_error(format!("`{name}` does not support DLPack: {e}")))?,
    };
    let dl_name: &CStr = c"dltensor";
    // SAFETY: `capsule` is a live Python object; PyCapsule_GetPointer checks that it is a capsule
    // named "dltensor" and returns null (with an exception set) otherwise.
    let raw = unsafe { pyo3::ffi::PyCapsule_GetPointer(capsule.as_ptr(), dl_name.as_ptr()) };
    if raw.is_null() {
        return Err(PyErr::take(obj.py()).unwrap_or_else(|| {
            type_error(format!("`{name}`: __dlpack__ gave no DLPack capsule"))
        }));
    }
    // SAFETY: a "dltensor" capsule holds a valid DLManagedTensor owned by the capsule, which we
    // keep alive in the returned value.
    let t = unsafe { &(*raw.cast::<DLManagedTensor>()).dl_tensor };
    let got = t.device.device_type;
    if got != want {
        return Err(value_error(match got {
            DL_CPU | DL_CUDA => format!(
                "`{name}` is a {} tensor; this call needs a {} tensor",
                device_name(got),
                device_name(want)
            ),
            d => format!("`{name}` is on an unsupported device (DLPack type {d})"),
        }));
    }
    if t.ndim != 2 {
        return Err(value_error(format!(
            "`{name}` must be 2-D, got {} dimensions",
            t.ndim
        )));
    }
    // SAFETY: DLPack guarantees `shape` has `ndim` (= 2) entries, and `strides` is null or too.
    let shape = unsafe { std::slice::from_raw_parts(t.shape, 2) };
    let (rows, cols) = (
        usize::try_from(shape[0]).unwrap_or(0),
        usize::try_from(shape[1]).unwrap_or(0),
    );
    if !t.strides.is_null() && rows * cols > 0 {
        // SAFETY: see above.
        let strides = unsafe { std::slice::from_raw_parts(t.strides, 2) };
        let ok = (cols <= 1 || strides[1] == 1) && (rows <= 1 || strides[0] == shape[1]);
        if !ok {
            return Err(value_error(format!("`{name}` must be C-contiguous")));
        }
    }
    rows.checked_mul(cols)
        .and_then(|n| n.checked_mul(usize::from(t.dtype.bits / 8)))
        .ok_or_else(|| value_error(format!("`{name}` is too large")))?;
    let ptr = t.data as u64 + t.byte_offset;
    Ok(RawTensor {
        capsule,
        ptr,
        rows,
        cols,
        dtype: t.dtype,
        device_id: t.device.device_id,
    })
}

/// Borrows `obj` as a 2-D C-contiguous tensor named `name` on a device of DLPack type `want`:
/// CUDA tensors through `__dlpack__(stream=-1)` (no producer-side synchronization: the kernels
/// run on the stream the caller passes).
fn borrow_on<'py>(obj: &Bound<'py, PyAny>, name: &str, want: i32) -> PyResult<TensorView<'py>> {
    let kwargs = if want == DL_CUDA {
        let kw = PyDict::new(obj.py());
        kw.set_item("stream", -1)?;
        Some(kw)
    } else {
        None
    };
    let raw = borrow_raw(obj, name, want, kwargs.as_ref())?;
    let dtype = elem_type(raw.dtype).ok_or_else(|| {
        type_error(format!(
            "`{name}` must be float16, bfloat16, float32 or float64"
        ))
    })?;
    Ok(TensorView {
        _capsule: raw.capsule,
        ptr: raw.ptr,
        rows: raw.rows,
        cols: raw.cols,
        dtype,
        device: raw.device_id,
    })
}

/// Borrows `obj` (via `__dlpack__`) as a 2-D C-contiguous CPU tensor named `name`.
pub fn borrow<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<TensorView<'py>> {
    borrow_on(obj, name, DL_CPU)
}

/// Borrows `obj` as a 2-D C-contiguous CUDA tensor named `name`.
pub fn borrow_cuda<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<TensorView<'py>> {
    borrow_on(obj, name, DL_CUDA)
}

/// Fails unless the two tensors are on the same device and their memory ranges are disjoint.
pub fn disjoint(a: &TensorView<'_>, b: &TensorView<'_>) -> PyResult<()> {
    if a.device != b.device {
        return Err(value_error(format!(
            "input and output are on different devices ({} and {})",
            a.device, b.device
        )));
    }
    let ((a0, a1), (b0, b1)) = (a.span(), b.span());
    if a0 < b1 && b0 < a1 {
        return Err(value_error("the output must not overlap the input"));
    }
    Ok(())
}
