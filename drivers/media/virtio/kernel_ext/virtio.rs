// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers over the virtio C API: driver registration and the device.
//!
//! Linux 7.3 has no virtio abstractions in the kernel crate, so this module
//! is the boundary: raw pointers stay here and in `ffi`.

pub(crate) mod virtqueue;

use crate::ffi;
use virtqueue::{Chain, Virtqueue};
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    error::to_result,
    prelude::*,
    sync::{Arc, ArcBorrow},
    types::ForeignOwnable,
    types::Opaque,
};

/// A virtio driver: what the bus calls on probe and removal.
pub(crate) trait Driver {
    /// Per-device state, owned by the bus binding between probe and remove.
    type Data: ForeignOwnable + Send + Sync;
    /// Driver name, as shown in sysfs.
    const NAME: &'static CStr;
    /// Device IDs to bind, terminated by a zero entry.
    const ID_TABLE: &'static [ffi::virtio_device_id];

    /// Sets up a newly found device.
    fn probe(vdev: &Device) -> Result<Self::Data>;
    /// Tears a device down; `data` is what probe returned.
    fn remove(vdev: &Device, data: Self::Data);
}

/// A device-id table entry for `device` from any vendor.
pub(crate) const fn device_id(device: u32) -> ffi::virtio_device_id {
    ffi::virtio_device_id {
        device,
        vendor: ffi::VIRTIO_DEV_ANY_ID,
    }
}

/// The registration of driver `T` with the virtio bus; unregisters on drop.
#[pin_data(PinnedDrop)]
pub(crate) struct DriverRegistration<T: Driver> {
    #[pin]
    drv: Opaque<ffi::virtio_driver>,
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
        let last = T::ID_TABLE.last();
        try_pin_init!(Self {
            drv <- Opaque::try_ffi_init(move |drv: *mut ffi::virtio_driver| {
                // The bus walks the table until a zero device ID.
                if last.map(|id| id.device) != Some(0) {
                    return Err(EINVAL);
                }
                // SAFETY: `try_ffi_init` gives a pointer valid for writes; an
                // all-zero `virtio_driver` is a valid value for the C side.
                unsafe { drv.write(core::mem::zeroed()) };
                // SAFETY: `drv` was just initialised and is pinned for as long
                // as the registration exists (until `PinnedDrop::drop`).
                unsafe {
                    (*drv).driver.name = T::NAME.as_char_ptr();
                    (*drv).driver.owner = module.as_ptr();
                    (*drv).id_table = T::ID_TABLE.as_ptr();
                    (*drv).probe = Some(Self::probe_callback);
                    (*drv).remove = Some(Self::remove_callback);
                    to_result(ffi::virtio_media_register_driver(drv))
                }
            }),
            _driver: PhantomData,
        })
    }

    /// # Safety
    ///
    /// Only the virtio bus calls this, with a valid device.
    unsafe extern "C" fn probe_callback(vdev: *mut ffi::virtio_device) -> c_int {
        // SAFETY: The bus calls probe with a valid device that outlives the
        // call.
        let dev = unsafe { Device::from_raw(vdev) };
        match T::probe(dev) {
            Ok(data) => {
                // The owned data lives in the generic device's driver data;
                // `vdev->priv` stays what `find_vqs` set, for the callbacks.
                // SAFETY: `vdev` is valid; its driver data is ours between
                // probe and remove.
                unsafe { (*vdev).dev.driver_data = data.into_foreign().cast() };
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Only the virtio bus calls this, with a device `probe_callback` bound.
    unsafe extern "C" fn remove_callback(vdev: *mut ffi::virtio_device) {
        // SAFETY: The bus calls remove with the valid device it probed.
        let dev = unsafe { Device::from_raw(vdev) };
        // SAFETY: probe succeeded (else remove is not called), so the driver
        // data holds what `into_foreign` returned, and it is taken back once.
        let data = unsafe { T::Data::from_foreign((*vdev).dev.driver_data.cast()) };
        T::remove(dev, data);
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for DriverRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `self.drv` was registered by `new` (the pin-init only
        // completes when registration succeeded).
        unsafe { ffi::virtio_media_unregister_driver(self.drv.get()) };
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

/// A virtio device bound to this driver.
#[repr(transparent)]
pub(crate) struct Device(Opaque<ffi::virtio_device>);

impl Device {
    /// # Safety
    ///
    /// `ptr` must point to a valid `virtio_device` that outlives `'a`.
    unsafe fn from_raw<'a>(ptr: *mut ffi::virtio_device) -> &'a Self {
        // SAFETY: `Device` is a transparent wrapper of `virtio_device`, and
        // the caller guarantees validity for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn as_raw(&self) -> *mut ffi::virtio_device {
        self.0.get()
    }

    /// The generic device, as parent of the V4L2 device.
    pub(crate) fn as_dev(&self) -> *mut ffi::device {
        // SAFETY: `self` wraps a valid device; this only computes a field
        // address.
        unsafe { &raw mut (*self.as_raw()).dev }
    }

    /// The virtio device ID the bus matched (42 or 48 for media).
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
            ffi::virtio_media_read_config(self.as_raw(), buf.as_mut_ptr().cast(), offset, len)
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
            ffi::virtio_media_find_vqs(
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
            ffi::virtio_media_del_vqs(self.as_raw());
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
        unsafe { ffi::virtio_media_device_ready(self.as_raw()) };
    }

    /// A handle to reset the device from outside its bus callbacks.
    ///
    /// # Safety
    ///
    /// The handle must be dropped before `remove` returns for this device.
    pub(crate) unsafe fn bound(&self) -> BoundDevice {
        // INVARIANT: The device is bound now; the caller drops the handle
        // before it is unbound.
        BoundDevice(NonNull::from(&self.0).cast())
    }

    /// Shared-memory region `id`, if the device has one.
    pub(crate) fn shm_region(&self, id: u8) -> Option<ShmRegion> {
        let mut region = ffi::virtio_shm_region::default();
        // SAFETY: `self` is a valid device and `region` a valid out-pointer.
        let found = unsafe { ffi::virtio_media_get_shm_region(self.as_raw(), &mut region, id) };
        found.then_some(ShmRegion {
            addr: region.addr,
            len: region.len,
        })
    }
}

/// A bound virtio device, held by the driver between probe and remove.
///
/// # Invariants
///
/// `0` is a device bound to this driver for as long as the handle exists.
pub(crate) struct BoundDevice(NonNull<ffi::virtio_device>);

// SAFETY: The device may be reset from any thread; the driver serialises
// resets with its own lock.
unsafe impl Send for BoundDevice {}
// SAFETY: As above.
unsafe impl Sync for BoundDevice {}

impl BoundDevice {
    /// Resets the device: it stops using every buffer and raises no more
    /// interrupts.
    pub(crate) fn reset(&self) {
        // SAFETY: The device is bound (invariant).
        unsafe { ffi::virtio_reset_device(self.0.as_ptr()) };
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
unsafe fn handler_of<'a, H: QueueHandler>(vq: *mut ffi::virtqueue) -> ArcBorrow<'a, H> {
    // SAFETY: The caller guarantees `vq` is one of our live queues, whose
    // device's driver data is the `Arc<H>` that `find_vqs` leaked and that
    // `del_vqs` only takes back after the queues (and their callbacks) are
    // gone.
    unsafe { ArcBorrow::from_raw((*(*vq).vdev).priv_.cast::<H>()) }
}

/// # Safety
///
/// Only virtio calls this, for the commandq `find_vqs::<H>` created.
unsafe extern "C" fn commandq_trampoline<H: QueueHandler>(vq: *mut ffi::virtqueue) {
    // SAFETY: See the function's safety section.
    H::commandq_done(unsafe { handler_of::<H>(vq) });
}

/// # Safety
///
/// Only virtio calls this, for the eventq `find_vqs::<H>` created.
unsafe extern "C" fn eventq_trampoline<H: QueueHandler>(vq: *mut ffi::virtqueue) {
    // SAFETY: See the function's safety section.
    H::eventq_done(unsafe { handler_of::<H>(vq) });
}
