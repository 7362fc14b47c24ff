//! The hardware watchdog (`/dev/watchdog`, Linux watchdog API): once opened it resets the
//! machine unless it is petted within its timeout. `bulkhead run` holds it on the appliance
//! (the init says so with `BULKHEAD_WATCHDOG=SECONDS`) and pets it from its main loop, so a
//! frozen supervisor or a hung kernel ends in a reset (and, on a new A/B slot, GRUB's try
//! counter then returns to the old one). Dropping the handle disarms it with the "magic
//! close" (`V` written before the close), so a clean exit does not reset the box.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

// <linux/watchdog.h>: _IOWR('W', 6, int) and _IOR('W', 7, int)
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
const WDIOC_GETTIMEOUT: libc::c_ulong = 0x8004_5707;

/// An armed watchdog device.
#[derive(Debug)]
pub struct Watchdog {
    file: File,
    timeout: u32,
}

impl Watchdog {
    /// Open (and so arm) the device and set its timeout in seconds; the timeout the driver
    /// accepted is in [`Watchdog::timeout`].
    pub fn open(path: &Path, timeout: u32) -> std::io::Result<Watchdog> {
        if timeout == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a watchdog timeout of 0 s",
            ));
        }
        let file = OpenOptions::new().write(true).open(path)?;
        let mut wd = Watchdog { file, timeout };
        let mut t: libc::c_int = timeout.min(i32::MAX as u32) as libc::c_int;
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one int; the fd is open (owned by `file`).
        let rc = unsafe { libc::ioctl(wd.file.as_raw_fd(), WDIOC_SETTIMEOUT, &mut t) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // keep the device's own timeout, but say which one it is
            let mut cur: libc::c_int = 0;
            // SAFETY: WDIOC_GETTIMEOUT writes one int; the fd is open.
            if unsafe { libc::ioctl(wd.file.as_raw_fd(), WDIOC_GETTIMEOUT, &mut cur) } == 0
                && cur > 0
            {
                wd.timeout = cur as u32;
            } else {
                drop(wd); // magic close: do not leave it armed
                return Err(err);
            }
        } else if t > 0 {
            wd.timeout = t as u32;
        }
        wd.pet()?;
        Ok(wd)
    }

    /// The timeout in seconds the device runs with.
    pub fn timeout(&self) -> u32 {
        self.timeout
    }

    /// Restart the countdown (any write does).
    pub fn pet(&mut self) -> std::io::Result<()> {
        self.file.write_all(b"\0")
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // magic close: the driver stops the timer when 'V' was the last byte before close
        let _ = self.file.write_all(b"V");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_timeout_is_refused_before_anything_is_opened() {
        let e = Watchdog::open(Path::new("/nonexistent/watchdog"), 0).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_missing_device_is_an_error() {
        assert!(Watchdog::open(Path::new("/nonexistent/watchdog"), 10).is_err());
    }
}
