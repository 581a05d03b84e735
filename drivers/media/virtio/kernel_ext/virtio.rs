// SPDX-License-Identifier: GPL-2.0

//! Virtio drivers: registration with the bus, the device, its virtqueues.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h)
//!
//! Linux 7.3 has no virtio abstractions in the kernel crate; this module is
//! shaped as the bus abstractions there (`kernel::pci`): a [`Driver`]
//! trait, a registration, and a device table that modpost turns into
//! module aliases.

pub(crate) mod virtqueue;

use super::bindings;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    device_id::{IdTable, RawDeviceId},
    error::to_result,
    new_mutex,
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
    types::Opaque,
};
use virtqueue::{Chain, Virtqueue};

/// `struct virtio_device_id`, which the bindings do not make `Copy`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct RawDeviceIdEntry {
    device: u32,
    vendor: u32,
}

kernel::static_assert!(
    core::mem::size_of::<RawDeviceIdEntry>() == core::mem::size_of::<bindings::virtio_device_id>()
);
kernel::static_assert!(
    core::mem::offset_of!(RawDeviceIdEntry, vendor)
        == core::mem::offset_of!(bindings::virtio_device_id, vendor)
);

/// A virtio device ID to bind, from any vendor (`struct virtio_device_id`).
#[repr(transparent)]
pub(crate) struct DeviceId(RawDeviceIdEntry);

impl DeviceId {
    /// The ID of device type `device`, from any vendor.
    pub(crate) const fn new(device: u32) -> Self {
        Self(RawDeviceIdEntry {
            device,
            vendor: bindings::VIRTIO_DEV_ANY_ID,
        })
    }
}

// SAFETY: `DeviceId` is a transparent wrapper of `RawDeviceIdEntry`, which
// has the layout of `struct virtio_device_id` (checked above).
unsafe impl RawDeviceId for DeviceId {
    type RawType = RawDeviceIdEntry;
}

/// A device table (made by [`virtio_device_table`]).
pub(crate) type DeviceTable = &'static dyn IdTable<DeviceId, ()>;

/// Declares the zero-terminated device table of a virtio driver, which
/// modpost also turns into the module's `virtio:d...v*` aliases.
macro_rules! virtio_device_table {
    ($name:ident, [$($id:expr),* $(,)?]) => {
        kernel::module_device_table!(
            "virtio",
            $crate::kernel_ext::virtio::DeviceId,
            $name,
            @none,
            [$($id),*]
        );
    };
}
pub(crate) use virtio_device_table;

/// A virtio driver: what the bus calls on probe, removal and system sleep.
#[vtable]
pub(crate) trait Driver {
    /// Per-device state, owned by the bus binding between probe and remove.
    type Data: Send + Sync;
    /// Driver name, as shown in sysfs.
    const NAME: &'static CStr;
    /// Devices to bind.
    const ID_TABLE: DeviceTable;

    /// Sets up a newly found device. `binding` stays usable outside the
    /// bus callbacks until the device is removed.
    fn probe(vdev: &Device, binding: BoundDevice) -> Result<Self::Data>;
    /// Tears a device down; `data` is what probe returned. The device must
    /// be reset and its queues deleted when this returns.
    fn remove(vdev: &Device, data: Self::Data);
    /// The system goes to sleep: stop the device (reset it, delete its
    /// queues).
    fn freeze(_vdev: &Device, _data: &Self::Data) -> Result {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
    /// The system woke up: set the device up again.
    fn restore(_vdev: &Device, _data: &Self::Data) -> Result {
        build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// What the bus binding keeps between probe and remove.
struct Bound<T: Driver> {
    binding: BoundDevice,
    data: T::Data,
}

/// The registration of driver `T` with the virtio bus; unregisters on drop.
#[pin_data(PinnedDrop)]
pub(crate) struct DriverRegistration<T: Driver> {
    #[pin]
    drv: Opaque<bindings::virtio_driver>,
    _driver: PhantomData<T>,
}

// SAFETY: The registration is only touched by the C side after registering,
// and the C side serialises its own accesses to the driver structure.
unsafe impl<T: Driver> Sync for DriverRegistration<T> {}
// SAFETY: Registration and unregistration may happen on any thread.
unsafe impl<T: Driver> Send for DriverRegistration<T> {}

impl<T: Driver + 'static> DriverRegistration<T> {
    /// Registers `T` with the virtio bus.
    pub(crate) fn new(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            drv <- Opaque::try_ffi_init(move |drv: *mut bindings::virtio_driver| {
                // SAFETY: `try_ffi_init` gives a pointer valid for writes; an
                // all-zero `virtio_driver` is a valid value for the C side.
                unsafe { drv.write(core::mem::zeroed()) };
                // SAFETY: `drv` was just initialised and is pinned for as long
                // as the registration exists (until `PinnedDrop::drop`); the
                // table is zero-terminated (`IdArray`).
                unsafe {
                    (*drv).driver.name = T::NAME.as_char_ptr();
                    (*drv).driver.owner = module.as_ptr();
                    (*drv).id_table = T::ID_TABLE.as_ptr().cast();
                    (*drv).probe = Some(Self::probe_callback);
                    (*drv).remove = Some(Self::remove_callback);
                    if T::HAS_FREEZE {
                        (*drv).freeze = Some(Self::freeze_callback);
                    }
                    if T::HAS_RESTORE {
                        (*drv).restore = Some(Self::restore_callback);
                    }
                    to_result(bindings::virtio_media_register_driver(drv))
                }
            }),
            _driver: PhantomData,
        })
    }

    /// # Safety
    ///
    /// Only the virtio bus calls this, with a valid device.
    unsafe extern "C" fn probe_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The bus calls probe with a valid device that outlives the
        // call.
        let dev = unsafe { Device::from_raw(vdev) };
        let binding = match BoundDevice::new(vdev) {
            Ok(binding) => binding,
            Err(e) => return e.to_errno(),
        };
        let bound = T::probe(dev, binding.clone()).and_then(|data| {
            Ok(KBox::new(
                Bound::<T> {
                    binding: binding.clone(),
                    data,
                },
                GFP_KERNEL,
            )?)
        });
        match bound {
            Ok(bound) => {
                // The state lives in the generic device's driver data;
                // `vdev->priv` stays what `find_vqs` set, for the callbacks.
                // SAFETY: `vdev` is valid; its driver data is ours between
                // probe and remove.
                unsafe { (*vdev).dev.driver_data = KBox::into_raw(bound).cast() };
                0
            }
            Err(e) => {
                binding.revoke();
                e.to_errno()
            }
        }
    }

    /// # Safety
    ///
    /// Only the virtio bus calls this, with a device `probe_callback`
    /// bound, between probe and remove.
    unsafe fn bound<'a>(vdev: *mut bindings::virtio_device) -> &'a Bound<T> {
        // SAFETY: Probe stored a leaked `Bound<T>` in the driver data.
        unsafe { &*(*vdev).dev.driver_data.cast::<Bound<T>>() }
    }

    /// # Safety
    ///
    /// Only the virtio bus calls this, with a device `probe_callback` bound.
    unsafe extern "C" fn remove_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The bus calls remove with the valid device it probed.
        let dev = unsafe { Device::from_raw(vdev) };
        // SAFETY: probe succeeded (else remove is not called), so the driver
        // data holds the box it leaked, taken back once.
        let bound = unsafe { KBox::from_raw((*vdev).dev.driver_data.cast::<Bound<T>>()) };
        let Bound { binding, data } = KBox::into_inner(bound);
        T::remove(dev, data);
        // Handles the driver kept stop working before the device goes.
        binding.revoke();
    }

    /// # Safety
    ///
    /// Only the virtio bus calls this, with a bound device.
    unsafe extern "C" fn freeze_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: See the safety section.
        let (dev, bound) = unsafe { (Device::from_raw(vdev), Self::bound(vdev)) };
        match T::freeze(dev, &bound.data) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Only the virtio bus calls this, with a bound device.
    unsafe extern "C" fn restore_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: See the safety section.
        let (dev, bound) = unsafe { (Device::from_raw(vdev), Self::bound(vdev)) };
        match T::restore(dev, &bound.data) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for DriverRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `self.drv` was registered by `new` (the pin-init only
        // completes when registration succeeded).
        unsafe { bindings::virtio_media_unregister_driver(self.drv.get()) };
    }
}

/// A shared-memory region of the device, in guest physical address space.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShmRegion {
    /// Guest physical address of the start of the region.
    pub(crate) addr: u64,
    /// Length in bytes.
    pub(crate) len: u64,
}

/// A virtio device, as the bus hands it to a driver's callbacks.
#[repr(transparent)]
pub(crate) struct Device(Opaque<bindings::virtio_device>);

impl Device {
    /// # Safety
    ///
    /// `ptr` must point to a valid `virtio_device` that outlives `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::virtio_device) -> &'a Self {
        // SAFETY: `Device` is a transparent wrapper of `virtio_device`, and
        // the caller guarantees validity for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }

    /// The generic device.
    pub(crate) fn as_device(&self) -> &kernel::device::Device {
        // SAFETY: `self` wraps a valid device, whose generic device is valid
        // as long as it is.
        unsafe { kernel::device::Device::from_raw(&raw mut (*self.as_raw()).dev) }
    }

    /// The virtio device ID the bus matched.
    pub(crate) fn device_id(&self) -> u32 {
        // SAFETY: `self` wraps a valid device; `id` is constant after probe.
        unsafe { (*self.as_raw()).id.device }
    }

    /// Reads `buf.len()` bytes of device config space at `offset`.
    pub(crate) fn read_config(&self, offset: u32, buf: &mut [u8]) -> Result {
        let len = u32::try_from(buf.len())?;
        // SAFETY: `self` is a valid device and `buf` is valid for `len`
        // bytes of writes; the helper reads a consistent snapshot.
        unsafe {
            bindings::virtio_media_read_config(self.as_raw(), buf.as_mut_ptr().cast(), offset, len)
        };
        Ok(())
    }

    /// Sets up the commandq and eventq, whose interrupts call `H`'s
    /// handlers with `handler`. One reference to `handler` is kept in the
    /// device's driver data (`vdev->priv`; `vq->priv` belongs to the
    /// transport, which keeps the notify address there) until
    /// [`Device::del_vqs`] gives it back, so the handlers' data outlives
    /// every callback.
    pub(crate) fn find_vqs<H: QueueHandler, C: Chain, E: Chain>(
        &self,
        handler: Arc<H>,
    ) -> Result<(Virtqueue<C>, Virtqueue<E>)> {
        // SAFETY: `self` is valid; no callback runs before the queues exist,
        // so nothing reads `priv` concurrently.
        unsafe { (*self.as_raw()).priv_ = Arc::into_raw(handler).cast_mut().cast() };
        let mut vqs = [core::ptr::null_mut(); 2];
        // SAFETY: `self` is valid and `vqs` has room for the two queues.
        let found = to_result(unsafe {
            bindings::virtio_media_find_vqs(
                self.as_raw(),
                vqs.as_mut_ptr(),
                Some(commandq_trampoline::<H>),
                Some(eventq_trampoline::<H>),
            )
        });
        let [Some(commandq), Some(eventq)] = vqs.map(NonNull::new) else {
            self.del_vqs::<H>();
            return Err(found.err().unwrap_or(ENODEV));
        };
        // SAFETY: Both queues were just created, live until `del_vqs`, and
        // only the returned wrappers add buffers to them.
        let queues = unsafe {
            Virtqueue::from_raw(commandq).and_then(|c| Ok((c, Virtqueue::from_raw(eventq)?)))
        };
        if queues.is_err() {
            self.del_vqs::<H>();
        }
        queues
    }

    /// Deletes the virtqueues (the device must be reset first) and drops the
    /// handler reference `find_vqs::<H>` kept.
    pub(crate) fn del_vqs<H: QueueHandler>(&self) {
        // SAFETY: `self` is valid; deleting absent queues is a no-op. After
        // this no callback runs, so the handler reference can go.
        let data = unsafe {
            bindings::virtio_media_del_vqs(self.as_raw());
            core::mem::replace(&mut (*self.as_raw()).priv_, core::ptr::null_mut())
        };
        if !data.is_null() {
            // SAFETY: `find_vqs::<H>` stored a leaked `Arc<H>` there, taken
            // back once (the field is cleared above).
            drop(unsafe { Arc::from_raw(data.cast::<H>()) });
        }
    }

    /// Lets the device start using the queues (DRIVER_OK).
    pub(crate) fn ready(&self) {
        // SAFETY: `self` is valid.
        unsafe { bindings::virtio_media_device_ready(self.as_raw()) };
    }

    /// Shared-memory region `id`, if the device has one.
    pub(crate) fn shm_region(&self, id: u8) -> Option<ShmRegion> {
        let mut region = bindings::virtio_shm_region::default();
        // SAFETY: `self` is a valid device and `region` a valid out-pointer.
        let found =
            unsafe { bindings::virtio_media_get_shm_region(self.as_raw(), &mut region, id) };
        found.then_some(ShmRegion {
            addr: region.addr,
            len: region.len,
        })
    }
}

/// A bound virtio device, usable outside the bus callbacks until it is
/// unbound: then [`BoundDevice::reset`] does nothing.
#[derive(Clone)]
pub(crate) struct BoundDevice(Arc<BoundInner>);

/// # Invariants
///
/// While `vdev` is `Some`, it is a device bound to this driver: the bus's
/// remove callback clears it before the device goes.
#[pin_data]
struct BoundInner {
    #[pin]
    vdev: Mutex<Option<NonNull<bindings::virtio_device>>>,
}

// SAFETY: The device pointer is only used under the lock, and a device may
// be reset from any thread.
unsafe impl Send for BoundInner {}
// SAFETY: As above.
unsafe impl Sync for BoundInner {}

impl BoundDevice {
    fn new(vdev: *mut bindings::virtio_device) -> Result<Self> {
        Ok(Self(Arc::pin_init(
            pin_init!(BoundInner {
                // INVARIANT: The bus is probing it.
                vdev <- new_mutex!(NonNull::new(vdev), "virtio_bound_device"),
            }),
            GFP_KERNEL,
        )?))
    }

    fn revoke(&self) {
        *self.0.vdev.lock() = None;
    }

    /// Resets the device: it stops using every buffer and raises no more
    /// interrupts. Returns whether the device was still bound.
    pub(crate) fn reset(&self) -> bool {
        let vdev = self.0.vdev.lock();
        let Some(vdev) = *vdev else {
            return false;
        };
        // SAFETY: Bound while in the lock (invariant); the reset may sleep,
        // which a mutex allows.
        if !unsafe { bindings::virtio_media_reset_device(vdev.as_ptr()) } {
            // Not reset, but gone: it reaches no memory and raises nothing.
            pr_err!("device reads all-ones: it is gone; not waiting for its reset\n");
        }
        true
    }
}

/// What the virtqueue interrupts call; runs in interrupt context.
pub(crate) trait QueueHandler: Send + Sync + 'static {
    /// The device returned commandq chains.
    fn commandq_done(this: ArcBorrow<'_, Self>);
    /// The device returned eventq buffers.
    fn eventq_done(this: ArcBorrow<'_, Self>);
}

/// The handler of a queue's device, as `find_vqs` stored it.
///
/// # Safety
///
/// `vq` must be a live queue created by `Device::find_vqs::<H>`.
unsafe fn handler_of<'a, H: QueueHandler>(vq: *mut bindings::virtqueue) -> ArcBorrow<'a, H> {
    // SAFETY: The caller guarantees `vq` is one of our live queues, whose
    // device's driver data is the `Arc<H>` that `find_vqs` leaked and that
    // `del_vqs` only takes back after the queues (and their callbacks) are
    // gone.
    unsafe { ArcBorrow::from_raw((*(*vq).vdev).priv_.cast::<H>()) }
}

/// # Safety
///
/// Only virtio calls this, for the commandq `find_vqs::<H>` created.
unsafe extern "C" fn commandq_trampoline<H: QueueHandler>(vq: *mut bindings::virtqueue) {
    // SAFETY: See the function's safety section.
    H::commandq_done(unsafe { handler_of::<H>(vq) });
}

/// # Safety
///
/// Only virtio calls this, for the eventq `find_vqs::<H>` created.
unsafe extern "C" fn eventq_trampoline<H: QueueHandler>(vq: *mut bindings::virtqueue) {
    // SAFETY: See the function's safety section.
    H::eventq_done(unsafe { handler_of::<H>(vq) });
}
