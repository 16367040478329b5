//! `Value` ⇄ Python conversion. Builtin types of their exact type convert
//! natively; everything else (subclasses included, so their type survives) goes
//! through the package's pickler.

use crate::buffers::{lend_buffer, received_buffer, share_bytes};
use crate::objects::{self, Retains};
use crate::runtime::runtime;
use cpy2py_kernel::Kernel;
use cpy2py_wire::PeerId;
use cpy2py_wire::{Bytes, Value};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple,
};
use std::cell::{Cell, RefCell};
use std::ops::RangeInclusive;
use std::sync::OnceLock;

/// Values whose containers nest deeper than this are pickled as a whole, which
/// keeps decoding bounded (`Value::MAX_DEPTH`) and self-references intact.
const NATIVE_DEPTH: usize = Value::MAX_DEPTH - 4;

/// Containers with this many items or more travel as one pickle: the C
/// pickler and unpickler handle them faster than a `Value` per item, and on
/// PyPy they save an object crossing cpyext per item (see `cargo xtask bench`,
/// the bulk rows).
const BULK_ITEMS: usize = 1024;

/// Converts Python objects to values for one destination peer.
pub(crate) struct Encoder<'k> {
    /// Pickle protocol both sides read.
    pub protocol: u8,
    /// The kernel and the peer the values go to, for objects that travel by
    /// reference.
    pub kernel: &'k Kernel,
    /// Where the values go.
    pub dst: PeerId,
    /// Retains the frame needs (sent before it by [`Encoder::send_retains`]).
    pub retains: RefCell<Retains>,
    /// Set when a container nests too deeply (or holds itself).
    too_deep: Cell<bool>,
    /// An object that travels by reference wherever it appears: the target of
    /// the request whose reply this encodes (a method of it, or the object
    /// itself from `__iadd__`, must stay bound to the native object).
    pub referenced: Option<Py<PyAny>>,
}

impl<'k> Encoder<'k> {
    /// An encoder for values sent to `dst`.
    pub(crate) fn new(kernel: &'k Kernel, dst: PeerId) -> Self {
        Encoder {
            protocol: kernel.pickle_protocol(dst),
            kernel,
            dst,
            retains: RefCell::new(Retains::default()),
            too_deep: Cell::new(false),
            referenced: None,
        }
    }

    /// Sends the retains the converted values need; call before sending them.
    pub(crate) fn send_retains(&self) {
        self.retains.borrow_mut().send(self.kernel);
    }

    /// Converts `obj`.
    pub(crate) fn value(&self, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
        self.top(obj)
    }

    /// Converts each item of a sequence.
    pub(crate) fn values<'py>(
        &self,
        items: impl IntoIterator<Item = Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Value>> {
        items.into_iter().map(|item| self.top(&item)).collect()
    }

    /// Converts keyword arguments.
    pub(crate) fn kwargs(
        &self,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<(String, Value)>> {
        let Some(kwargs) = kwargs else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(kwargs.len());
        for (key, value) in kwargs.iter() {
            let key: String = key
                .extract()
                .map_err(|_| PyTypeError::new_err("keyword argument names must be strings"))?;
            out.push((key, self.top(&value)?));
        }
        Ok(out)
    }

    /// Converts one top-level value: natively, or as one pickle when its
    /// containers nest deeper than [`NATIVE_DEPTH`].
    fn top(&self, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
        let value = self.convert(obj, 0)?;
        if self.too_deep.replace(false) {
            return self.pickle(obj);
        }
        Ok(value)
    }

    fn convert(&self, obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
        let py = obj.py();
        if obj.is_none() {
            return Ok(Value::None);
        }
        let ty = obj.get_type();
        if ty.is(py.get_type::<PyBool>()) {
            return Ok(Value::Bool(obj.is_truthy()?));
        }
        if ty.is(py.get_type::<PyInt>()) {
            return match obj.extract::<i64>() {
                Ok(v) => Ok(Value::Int(v)),
                Err(_) => big_int_to_bytes(obj).map(|b| Value::BigInt(Bytes::from(b))),
            };
        }
        if ty.is(py.get_type::<PyFloat>()) {
            return Ok(Value::Float(obj.extract::<f64>()?));
        }
        if ty.is(py.get_type::<PyString>()) {
            // Strings with lone surrogates are not UTF-8: pickle keeps them.
            if let Ok(s) = obj.downcast::<PyString>()?.to_str() {
                return Ok(Value::Str(s.to_owned()));
            }
            return self.pickle(obj);
        }
        if ty.is(py.get_type::<PyBytes>()) {
            return Ok(Value::Bytes(share_bytes(obj.downcast::<PyBytes>()?)));
        }
        let container = ty.is(py.get_type::<PyList>())
            || ty.is(py.get_type::<PyTuple>())
            || ty.is(py.get_type::<PyDict>())
            || ty.is(py.get_type::<PySet>())
            || ty.is(py.get_type::<PyFrozenSet>());
        if !container {
            let referenced = self.referenced.as_ref().is_some_and(|r| r.is(obj));
            if referenced || crate::runtime::type_info(obj)?.by_ref {
                let r =
                    objects::to_ref(self.kernel, obj, self.dst, &mut self.retains.borrow_mut())?;
                return Ok(Value::Ref(r));
            }
            return self.pickle(obj);
        }
        if depth >= NATIVE_DEPTH {
            // Too deep to convert natively, or a container holding itself:
            // the whole top-level value goes as one pickle (see `top`), which
            // keeps cycles and shared parts intact.
            self.too_deep.set(true);
            return Ok(Value::None);
        }
        if obj.len()? >= BULK_ITEMS {
            if let Ok(list) = obj.downcast_exact::<PyList>() {
                if let Some(value) = pack_list(list)? {
                    return Ok(value);
                }
            }
        }
        if self.protocol != 0 && obj.len()? >= BULK_ITEMS {
            // Without memo on CPython when nothing in it can be shared or
            // refer back: dumps of a 10k str->float dict 415 -> 212 µs. (On
            // PyPy the check would cost an object crossing cpyext per item.)
            let flat = !runtime(py)?.pypy && holds_only_atoms(obj);
            // On failure, convert item by item: its error names the item.
            if let Ok(value) = self.pickle_as(obj, flat) {
                return Ok(value);
            }
        }
        let next = depth + 1;
        if let Ok(list) = obj.downcast_exact::<PyList>() {
            let mut out = Vec::with_capacity(list.len());
            for item in list.iter() {
                out.push(self.convert(&item, next)?);
            }
            return Ok(Value::List(out));
        }
        if let Ok(tuple) = obj.downcast_exact::<PyTuple>() {
            let mut out = Vec::with_capacity(tuple.len());
            for item in tuple.iter() {
                out.push(self.convert(&item, next)?);
            }
            return Ok(Value::Tuple(out));
        }
        if let Ok(dict) = obj.downcast_exact::<PyDict>() {
            let mut out = Vec::with_capacity(dict.len());
            for (k, v) in dict.iter() {
                out.push((self.convert(&k, next)?, self.convert(&v, next)?));
            }
            return Ok(Value::Dict(out));
        }
        if let Ok(set) = obj.downcast_exact::<PySet>() {
            let mut out = Vec::with_capacity(set.len());
            for item in set.iter() {
                out.push(self.convert(&item, next)?);
            }
            return Ok(Value::Set(out));
        }
        if let Ok(set) = obj.downcast_exact::<PyFrozenSet>() {
            let mut out = Vec::with_capacity(set.len());
            for item in set.iter() {
                out.push(self.convert(&item, next)?);
            }
            return Ok(Value::FrozenSet(out));
        }
        self.pickle(obj)
    }

    /// Pickles `obj`. `_runtime.dumps` returns the bytes, or the bytes and the
    /// objects it met that go by reference (by position), which travel as
    /// references beside the bytes. An object that cannot be pickled goes by
    /// reference instead, unless a copy was asked for (`by_value`): then the
    /// error says why there is none.
    fn pickle(&self, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
        let py = obj.py();
        match self.pickle_as(obj, false) {
            Err(e) if self.protocol != 0 => {
                let rt = runtime(py)?;
                let unpicklable = rt.errors.bind(py).getattr("UnpicklableError")?;
                if !e.is_instance(py, &unpicklable) || obj.is_instance(rt.by_value.bind(py))? {
                    return Err(e);
                }
                let r =
                    objects::to_ref(self.kernel, obj, self.dst, &mut self.retains.borrow_mut())?;
                Ok(Value::Ref(r))
            }
            result => result,
        }
    }

    /// Pickles `obj`, without the pickle's memo if `flat` (see `_runtime.dumps`).
    fn pickle_as(&self, obj: &Bound<'_, PyAny>, flat: bool) -> PyResult<Value> {
        let py = obj.py();
        if self.protocol == 0 {
            // The destination cannot unpickle (a Rust host): it gets the
            // object by reference instead.
            let r = objects::to_ref(self.kernel, obj, self.dst, &mut self.retains.borrow_mut())?;
            return Ok(Value::Ref(r));
        }
        let dumps = runtime(py)?.dumps.bind(py);
        // Out-of-band buffers from protocol 5 on (`_runtime.dumps`).
        let out_of_band = self.protocol >= 5;
        let dumped = match &self.referenced {
            None if !out_of_band => dumps.call1((obj, self.protocol, flat, self.dst.0))?,
            None => dumps.call1((obj, self.protocol, flat, self.dst.0, py.None(), true))?,
            Some(r) => dumps.call1((obj, self.protocol, flat, self.dst.0, r, out_of_band))?,
        };
        let (data, found, views) = match dumped.downcast::<PyTuple>() {
            Ok(parts) if parts.len() == 3 => (
                parts.get_item(0)?,
                Some(parts.get_item(1)?).filter(|r| !r.is_none()),
                Some(parts.get_item(2)?),
            ),
            Ok(parts) => (parts.get_item(0)?, Some(parts.get_item(1)?), None),
            Err(_) => (dumped, None, None),
        };
        let mut buffers = Vec::new();
        if let Some(views) = views {
            for view in views.try_iter()? {
                buffers.push(lend_buffer(&view?, |len| {
                    self.kernel.arena_chunk(self.dst, len)
                })?);
            }
        }
        let data = data
            .downcast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("cpy2py._runtime.dumps must return bytes"))?;
        let mut refs = Vec::new();
        if let Some(found) = found {
            for item in found.try_iter()? {
                let item = item?;
                refs.push(objects::to_ref(
                    self.kernel,
                    &item,
                    self.dst,
                    &mut self.retains.borrow_mut(),
                )?);
            }
        }
        Ok(Value::Pickle {
            data: share_bytes(data),
            refs,
            buffers,
        })
    }
}

/// Whether `obj`, an exact list, tuple or dict, holds only atoms: `None`,
/// bools, ints, floats, strs and bytes of exactly those types. Such a value
/// pickles the same without the pickle's memo: no item can be a container
/// shared with or holding another, and no item is a TwinObject.
fn holds_only_atoms(obj: &Bound<'_, PyAny>) -> bool {
    let py = obj.py();
    let atoms = [
        py.None().bind(py).get_type().as_type_ptr(),
        py.get_type::<PyBool>().as_type_ptr(),
        py.get_type::<PyInt>().as_type_ptr(),
        py.get_type::<PyFloat>().as_type_ptr(),
        py.get_type::<PyString>().as_type_ptr(),
        py.get_type::<PyBytes>().as_type_ptr(),
    ];
    let atom = |item: &Bound<'_, PyAny>| atoms.contains(&item.get_type_ptr());
    if let Ok(list) = obj.downcast_exact::<PyList>() {
        return list.iter().all(|item| atom(&item));
    }
    if let Ok(tuple) = obj.downcast_exact::<PyTuple>() {
        return tuple.iter().all(|item| atom(&item));
    }
    if let Ok(dict) = obj.downcast_exact::<PyDict>() {
        return dict.iter().all(|(key, value)| atom(&key) && atom(&value));
    }
    false
}

/// A non-empty list of ints that all fit in 64 signed bits, or of floats, as
/// one packed value (exact types only: bools and subclasses keep their type
/// through pickle). `None` for any other list.
fn pack_list(list: &Bound<'_, PyList>) -> PyResult<Option<Value>> {
    let py = list.py();
    if let Some((pack, _)) = &runtime(py)?.packers {
        let packed = pack.bind(py).call1((list,))?;
        if packed.is_none() {
            return Ok(None);
        }
        let (kind, data): (String, Bound<'_, PyBytes>) = packed.extract()?;
        let data = share_bytes(&data);
        return Ok(Some(match kind.as_str() {
            "q" => Value::IntList(data),
            _ => Value::FloatList(data),
        }));
    }
    let Ok(first) = list.get_item(0) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(list.len() * 8);
    if first.is_exact_instance_of::<PyInt>() {
        for item in list.iter() {
            if !item.is_exact_instance_of::<PyInt>() {
                return Ok(None);
            }
            let Ok(v) = item.extract::<i64>() else {
                return Ok(None);
            };
            out.extend_from_slice(&v.to_le_bytes());
        }
        return Ok(Some(Value::IntList(Bytes::from(out))));
    }
    if first.is_exact_instance_of::<PyFloat>() {
        for item in list.iter() {
            let Ok(f) = item.downcast_exact::<PyFloat>() else {
                return Ok(None);
            };
            out.extend_from_slice(&f.value().to_bits().to_le_bytes());
        }
        return Ok(Some(Value::FloatList(Bytes::from(out))));
    }
    Ok(None)
}

/// The list a [`Value::IntList`] or [`Value::FloatList`] packs.
fn unpack_list(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    let (kind, data) = match value {
        Value::IntList(data) => ("q", data),
        Value::FloatList(data) => ("d", data),
        _ => return Err(PyTypeError::new_err("not a packed list")),
    };
    if let Some((_, unpack)) = &runtime(py)?.packers {
        return Ok(unpack
            .bind(py)
            .call1((kind, PyBytes::new(py, data)))?
            .unbind());
    }
    if let Some(ints) = value.ints() {
        return Ok(PyList::new(py, ints)?.into_any().unbind());
    }
    if let Some(floats) = value.floats() {
        return Ok(PyList::new(py, floats)?.into_any().unbind());
    }
    Err(PyTypeError::new_err("not a packed list"))
}

fn big_int_to_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let py = obj.py();
    let bits: usize = obj.call_method0("bit_length")?.extract()?;
    let len = bits / 8 + 1;
    let kwargs = PyDict::new(py);
    kwargs.set_item("signed", true)?;
    let bytes = obj.call_method("to_bytes", (len, "little"), Some(&kwargs))?;
    Ok(bytes.downcast::<PyBytes>()?.as_bytes().to_vec())
}

/// The ints [`small_int`] keeps.
const SMALL_INTS: RangeInclusive<i64> = -5..=1024;

/// A shared Python int for `i` if it is in [`SMALL_INTS`]. PyPy makes every
/// int handed to it through cpyext anew, an allocation plus a link to a PyPy
/// object: in a profile of a PyPy twin in the callback bounce, making the one
/// int argument cost as much as calling the function. CPython keeps such a
/// cache of its own (-5 to 256); this one costs it nothing more.
fn small_int(py: Python<'_>, i: i64) -> Option<Py<PyAny>> {
    static SMALL: OnceLock<Vec<Py<PyAny>>> = OnceLock::new();
    if !SMALL_INTS.contains(&i) {
        return None;
    }
    // Filled with the GIL held and without releasing it, so no other thread
    // can wait here for it meanwhile.
    let ints = SMALL.get_or_init(|| {
        SMALL_INTS
            .map(|n| {
                let Ok(obj) = n.into_pyobject(py);
                obj.into_any().unbind()
            })
            .collect()
    });
    let at = usize::try_from(i - SMALL_INTS.start()).ok()?;
    ints.get(at).map(|obj| obj.clone_ref(py))
}

/// Converts a value received from `twin` into a Python object.
/// `twin` names the sender, for error messages only (computed when needed).
pub(crate) fn to_python(
    py: Python<'_>,
    value: Value,
    twin: &dyn Fn() -> String,
) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::None => py.None(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        Value::Int(i) => match small_int(py, i) {
            Some(obj) => obj,
            None => i.into_pyobject(py)?.into_any().unbind(),
        },
        Value::BigInt(bytes) => {
            let kwargs = PyDict::new(py);
            kwargs.set_item("signed", true)?;
            py.get_type::<PyInt>()
                .call_method(
                    "from_bytes",
                    (PyBytes::new(py, &bytes), "little"),
                    Some(&kwargs),
                )?
                .unbind()
        }
        Value::Float(f) => PyFloat::new(py, f).into_any().unbind(),
        Value::Str(s) => PyString::new(py, &s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
        Value::List(items) => {
            let items = items
                .into_iter()
                .map(|v| to_python(py, v, twin))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any().unbind()
        }
        Value::Tuple(items) => {
            let items = items
                .into_iter()
                .map(|v| to_python(py, v, twin))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)?.into_any().unbind()
        }
        Value::Dict(items) => {
            let dict = PyDict::new(py);
            for (k, v) in items {
                dict.set_item(to_python(py, k, twin)?, to_python(py, v, twin)?)?;
            }
            dict.into_any().unbind()
        }
        Value::Set(items) => {
            let items = items
                .into_iter()
                .map(|v| to_python(py, v, twin))
                .collect::<PyResult<Vec<_>>>()?;
            PySet::new(py, items)?.into_any().unbind()
        }
        Value::FrozenSet(items) => {
            let items = items
                .into_iter()
                .map(|v| to_python(py, v, twin))
                .collect::<PyResult<Vec<_>>>()?;
            PyFrozenSet::new(py, items)?.into_any().unbind()
        }
        Value::Global { module, qualname } => {
            crate::runtime::resolve_cached(py, module, qualname)?.unbind()
        }
        Value::Pickle {
            data,
            refs,
            buffers,
        } => {
            let loads = runtime(py)?.loads.bind(py);
            let data = PyBytes::new(py, &data);
            let objects = if refs.is_empty() {
                None
            } else {
                let objects = refs
                    .into_iter()
                    .map(|r| to_python(py, Value::Ref(r), twin))
                    .collect::<PyResult<Vec<_>>>()?;
                Some(PyList::new(py, objects)?)
            };
            if !buffers.is_empty() {
                // Writable, as an array unpickled in band would be: the frame's
                // own memory when nothing else shares it, else a copy.
                let arrays = buffers
                    .into_iter()
                    .map(|b| received_buffer(py, b))
                    .collect::<PyResult<Vec<_>>>()?;
                loads
                    .call1((data, objects, PyList::new(py, arrays)?))?
                    .unbind()
            } else if let Some(objects) = objects {
                loads.call1((data, objects))?.unbind()
            } else {
                loads.call1((data,))?.unbind()
            }
        }
        Value::Ref(r) => match crate::kernel_opt() {
            Some(kernel) => objects::from_ref(py, kernel, r)?,
            None => return Err(crate::errors::error(py, "CPy2PyException", "no kernel")),
        },
        Value::Error(e) => crate::errors::rebuild(py, *e, &twin())?.into_any().unbind(),
        packed @ (Value::IntList(_) | Value::FloatList(_)) => unpack_list(py, &packed)?,
    })
}
