// SPDX-License-Identifier: GPL-2.0

//! The virtio driver: binding a virtio-media device (probe, remove) and
//! registering its video node.

#![forbid(unsafe_code)]

use crate::{
    command::Wait,
    device::{Abandon, MediaDevice, Params},
    kernel_ext::{
        media::v4l2::{
            self,
            ioctl::{VIDIOC_EXPBUF, VIDIOC_G_PARM, VIDIOC_S_PARM},
            types::{BufType, StreamParm},
            uapi::{
                V4L2_CAP_STREAMING, V4L2_CAP_VIDEO_CAPTURE, V4L2_CAP_VIDEO_CAPTURE_MPLANE,
                V4L2_CAP_VIDEO_M2M, V4L2_CAP_VIDEO_M2M_MPLANE, V4L2_CAP_VIDEO_OUTPUT,
                V4L2_CAP_VIDEO_OUTPUT_MPLANE,
            },
        },
        uapi::{VIRTIO_ID_MEDIA_DRAFT, VIRTIO_ID_MEDIA_SPEC, VIRTIO_MEDIA_SHM_MMAP},
        virtio,
    },
    protocol::{self, DeviceConfig},
    video::VideoDriver,
};
use kernel::{prelude::*, sync::Arc, transmute::AsBytes};

/// The virtio-media driver.
pub(crate) struct VirtioMediaDriver;

virtio::virtio_device_table!(
    VIRTIO_MEDIA_IDS,
    [
        virtio::DeviceId::new(VIRTIO_ID_MEDIA_DRAFT),
        virtio::DeviceId::new(VIRTIO_ID_MEDIA_SPEC),
    ]
);

/// What the bus binding keeps for a device: the device and its node.
pub(crate) struct Bound {
    dev: Arc<MediaDevice>,
    node: v4l2::Registration<VideoDriver>,
}

/// The buffer type a device's node mainly streams, from its capabilities.
fn main_buffer_type(caps: u32) -> Option<BufType> {
    if caps & (V4L2_CAP_VIDEO_CAPTURE_MPLANE | V4L2_CAP_VIDEO_M2M_MPLANE) != 0 {
        Some(BufType::VIDEO_CAPTURE_MPLANE)
    } else if caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_M2M) != 0 {
        Some(BufType::VIDEO_CAPTURE)
    } else if caps & V4L2_CAP_VIDEO_OUTPUT_MPLANE != 0 {
        Some(BufType::VIDEO_OUTPUT_MPLANE)
    } else if caps & V4L2_CAP_VIDEO_OUTPUT != 0 {
        Some(BufType::VIDEO_OUTPUT)
    } else {
        None
    }
}

#[vtable]
impl virtio::Driver for VirtioMediaDriver {
    type Data = KBox<Bound>;
    const NAME: &'static CStr = c"virtio_media";
    const ID_TABLE: virtio::DeviceTable = &VIRTIO_MEDIA_IDS;

    fn probe(vdev: &virtio::Device, binding: virtio::BoundDevice) -> Result<Self::Data> {
        let mut raw = [0u8; DeviceConfig::SIZE];
        vdev.read_config(0, &mut raw)?;
        let config = DeviceConfig::parse(&raw)?;
        let shm = vdev.shm_region(VIRTIO_MEDIA_SHM_MMAP as u8);
        let (shm_addr, shm_len) = shm.map_or((0, 0), |r| (r.addr, r.len));
        // Named by device: a guest may have several.
        dev_info!(
            vdev.as_device(),
            "device id {}: caps {:#x}, type {}, card \"{}\", shm {:#x}+{:#x}\n",
            vdev.device_id(),
            config.device_caps,
            config.device_type,
            config.card_name().unwrap_or("<invalid>"),
            shm_addr,
            shm_len
        );
        let params = Params {
            userptr: crate::module_parameters::userptr.value(),
            guest_mmap: crate::module_parameters::guest_mmap.value(),
        };
        let dev = Arc::pin_init(MediaDevice::new(config, shm, params), GFP_KERNEL)?;
        if dev.guest_mmap() && dev.config().device_caps & V4L2_CAP_STREAMING != 0 {
            dev_info!(
                vdev.as_device(),
                "MMAP buffers are in guest memory, passed to the device as USERPTR buffers\n"
            );
        }
        let (commandq, eventq) = vdev.find_vqs(dev.clone())?;
        vdev.ready();
        let node = dev
            .attach(binding, commandq, eventq)
            .and_then(|()| Self::check_answers(&dev))
            .and_then(|disabled| {
                let config = dev.config();
                let options = v4l2::Options {
                    name: config.card_name().unwrap_or("virtio-media").as_bytes(),
                    node_type: config.device_type,
                    device_caps: config.device_caps,
                    disabled: &disabled,
                };
                // The device's values, which the V4L2 core must not see
                // (it WARNs at a node without capabilities). Checked once
                // the device is live, like every other refusal here, so a
                // device sees DRIVER_OK, then the reset of the teardown.
                if let Some(problem) = options.problem() {
                    dev_err!(
                        vdev.as_device(),
                        "device caps {:#x}, type {}: {}; not binding\n",
                        config.device_caps,
                        config.device_type,
                        problem
                    );
                    return Err(EINVAL);
                }
                v4l2::Registration::new(vdev.as_device(), &options, dev.clone(), crate::module())
            });
        let node = match node {
            Ok(node) => node,
            Err(e) => {
                Self::teardown(vdev, &dev);
                return Err(e);
            }
        };
        pr_info!(
            "registered /dev/video{} for \"{}\"\n",
            node.number(),
            dev.config().card_name().unwrap_or("")
        );
        Ok(KBox::new(Bound { dev, node }, GFP_KERNEL)?)
    }

    fn remove(vdev: &virtio::Device, bound: Self::Data) {
        let Bound { dev, node } = KBox::into_inner(bound);
        dev.mark_gone();
        // No new opens; open files keep working until they find it gone.
        drop(node);
        Self::teardown(vdev, &dev);
        pr_info!(
            "removed \"{}\"\n",
            dev.config().card_name().unwrap_or("<invalid>")
        );
    }

    fn freeze(vdev: &virtio::Device, bound: &Self::Data) -> Result {
        bound.dev.suspend();
        vdev.del_vqs::<MediaDevice>();
        Ok(())
    }

    fn restore(vdev: &virtio::Device, bound: &Self::Data) -> Result {
        let dev = &bound.dev;
        let resumed = vdev.find_vqs(dev.clone()).and_then(|(commandq, eventq)| {
            vdev.ready();
            dev.resume(commandq, eventq)
        });
        if let Err(e) = resumed {
            pr_err!("cannot set the device up after sleep: {:?}\n", e);
            dev.declare_broken("it could not be set up again after sleep");
            return Err(e);
        }
        pr_info!("resumed\n");
        Ok(())
    }
}

impl VirtioMediaDriver {
    /// A device that cannot open a session is of no use: check it answers,
    /// and ask it which optional ioctls it lacks (returned, to be disabled
    /// on the node so the V4L2 core answers ENOTTY for every buffer type).
    fn check_answers(dev: &Arc<MediaDevice>) -> Result<KVec<u32>> {
        let session = dev.open_session().inspect_err(|e| {
            pr_err!("device does not answer OPEN ({:?}); not binding\n", e);
        })?;
        let disabled = Self::missing_ioctls(dev, session);
        if let Err(e) = dev.close_session(session).and_then(|answer| answer) {
            pr_err!("device does not answer CLOSE ({:?}); not binding\n", e);
            return Err(e);
        }
        pr_info!("device answers: opened and closed session {}\n", session);
        disabled
    }

    /// G/S_PARM are optional (m2m devices other than encoders lack them); a
    /// device that answers ENOTTY for its main buffer type has neither.
    /// EXPBUF only exists for guest-backed MMAP buffers.
    fn missing_ioctls(dev: &Arc<MediaDevice>, session: u32) -> Result<KVec<u32>> {
        let mut missing = KVec::new();
        if !dev.guest_mmap() {
            missing.push(VIDIOC_EXPBUF, GFP_KERNEL)?;
        }
        let Some(buf_type) = main_buffer_type(dev.config().device_caps) else {
            return Ok(missing);
        };
        let mut parm = StreamParm::zeroed();
        parm.set_buf_type(buf_type);
        let response_len = protocol::ioctl_response_size(VIDIOC_G_PARM, parm.as_bytes().len())?;
        let response = dev.command(
            |buf| {
                protocol::ioctl_request(buf, session, VIDIOC_G_PARM, parm.as_bytes(), &[], (&[], 0))
            },
            response_len,
            Wait::Interruptible,
            KVec::new(),
            0,
            Abandon::Drop,
        )?;
        if response.status() == Err(ENOTTY) {
            missing.push(VIDIOC_G_PARM, GFP_KERNEL)?;
            missing.push(VIDIOC_S_PARM, GFP_KERNEL)?;
        }
        Ok(missing)
    }

    /// Stops the device (see `MediaDevice::stop`, which the reset work
    /// may have run already: it does nothing twice), then deletes the
    /// queues: after that no callback runs.
    fn teardown(vdev: &virtio::Device, dev: &MediaDevice) {
        // The reset work holds the binding while it runs, and finds none
        // once it is taken.
        if let Some(bound) = dev.take_binding() {
            dev.stop(&bound);
        }
        vdev.del_vqs::<MediaDevice>();
    }
}
