//! The admin command set (NVMe 1.4 section 5): Create and Delete I/O
//! Submission and Completion Queues, Abort, Set and Get Features, Get Log
//! Page, Identify (with the identify data, written at the spec's offsets),
//! Keep Alive, and Asynchronous Event Requests beyond the limit.

use super::commands::Pending;
use super::events::TEMPERATURE;
use super::firmware::FRMW;
use super::queues::{Cq, PostKind, Sq};
use super::status::{
    spec, ABORTED_BY_REQUEST, ABORTED_SQ_DELETION, AER_LIMIT_EXCEEDED, COMMAND_SEQUENCE_ERROR, CQ_INVALID,
    INVALID_FIELD, INVALID_FORMAT, INVALID_LOG_PAGE, INVALID_NAMESPACE, INVALID_OPCODE, INVALID_QID,
    INVALID_QSIZE, INVALID_QUEUE_DELETION, NOT_SAVEABLE, PRP_OFFSET_INVALID, SUCCESS,
};
use super::{State, AER_LIMIT, CQ_ENTRY, PAGE, SQ_ENTRY, VERSION};
use crate::config::DoorbellBuffer;
use core::time::Duration;
use hal_traits::PAGE_SIZE;
use nvme_spec::command::{AdminOpcode, SubmissionEntry};
use nvme_spec::dwords::{
    AbortCdw10, CreateIoCqCdw11, CreateIoQueueCdw10, CreateIoSqCdw11, DeleteIoQueueCdw10, FeaturesCdw10,
    GetLogPageCdw10, GetLogPageCdw11, IdentifyCdw10, NumberOfQueues, TemperatureThreshold,
};
use nvme_spec::ids::{AsyncEventInfo, Cns, Fid, Lid, Nidt};
use nvme_spec::status::command_specific as cs;

/// The largest log page transfer accepted.
const MAX_LOG_BYTES: usize = 64 << 10;

/// Where a feature's value is kept: by FID, and for the temperature
/// threshold also by sensor and over/under (TMPSEL, THSEL in CDW11).
fn feature_key(fid: Fid, cdw11: u32) -> u16 {
    if fid == Fid::TEMPERATURE_THRESHOLD {
        let t = TemperatureThreshold::from_bits(cdw11);
        u16::from(fid.0) | (u16::from(t.sensor() << 2 | t.under()) << 8)
    } else {
        u16::from(fid.0)
    }
}

/// A feature's default value: the over-temperature threshold is 343 K,
/// everything else 0.
fn feature_default(fid: Fid, cdw11: u32) -> u32 {
    match fid {
        Fid::TEMPERATURE_THRESHOLD if TemperatureThreshold::from_bits(cdw11).under() == 0 => 343,
        _ => 0,
    }
}

/// ELPE: Error Log Page Entries, 0-based.
const ELPE: u8 = 3;

/// The Commands Supported and Effects log (figure 196): the admin and I/O
/// opcodes this controller executes; writes change logical block content.
fn commands_effects() -> Vec<u8> {
    let mut page = vec![0u8; 4096];
    let supported = 1u32;
    let lba_change = 1 << 1;
    for op in [0x00u8, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0a, 0x0c, 0x0d, 0x10, 0x11, 0x15, 0x18] {
        put(&mut page, usize::from(op) * 4, &supported.to_le_bytes());
    }
    for (op, effects) in [
        (0x00u8, supported),
        (0x01, supported | lba_change),
        (0x02, supported),
        (0x08, supported | lba_change),
        (0x09, supported | lba_change),
    ] {
        put(&mut page, 1024 + usize::from(op) * 4, &effects.to_le_bytes());
    }
    page
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Writes `s` into a fixed-width ASCII field padded with spaces.
fn put_str(buf: &mut [u8], at: usize, width: usize, s: &str) {
    buf[at..at + width].fill(b' ');
    let n = s.len().min(width);
    buf[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
}

impl State {
    pub(super) fn execute_admin(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        if cmd.cdw0.fuse() != 0 || cmd.cdw0.psdt() != 0 {
            return (INVALID_FIELD, 0);
        }
        match AdminOpcode(cmd.cdw0.opc()) {
            AdminOpcode::DOORBELL_BUFFER_CONFIG if self.cfg.doorbell_buffer != DoorbellBuffer::Off => {
                (self.doorbell_buffer_config(cmd), 0)
            }
            AdminOpcode::DELETE_IO_SQ => (self.delete_sq(cmd), 0),
            AdminOpcode::CREATE_IO_SQ => (self.create_sq(cmd), 0),
            AdminOpcode::GET_LOG_PAGE => (self.get_log_page(cmd), 0),
            AdminOpcode::DELETE_IO_CQ => (self.delete_cq(cmd), 0),
            AdminOpcode::CREATE_IO_CQ => (self.create_cq(cmd), 0),
            AdminOpcode::IDENTIFY => (self.identify(cmd), 0),
            AdminOpcode::ABORT => (SUCCESS, self.abort(cmd)),
            AdminOpcode::FORMAT_NVM => (self.format_nvm(cmd), 0),
            AdminOpcode::FIRMWARE_IMAGE_DOWNLOAD => (self.firmware_download(cmd), 0),
            AdminOpcode::FIRMWARE_COMMIT => (self.firmware_commit(cmd), 0),
            AdminOpcode::NAMESPACE_MANAGEMENT => self.namespace_management(cmd),
            AdminOpcode::NAMESPACE_ATTACHMENT => (self.namespace_attachment(cmd), 0),
            AdminOpcode::DEVICE_SELF_TEST => (self.device_self_test(cmd), 0),
            AdminOpcode::SANITIZE if self.cfg.sanicap != 0 => (self.sanitize(cmd), 0),
            AdminOpcode::SECURITY_SEND if self.cfg.security => (self.security_send(cmd), 0),
            AdminOpcode::SECURITY_RECEIVE if self.cfg.security => (self.security_receive(cmd), 0),
            AdminOpcode::SET_FEATURES => self.set_features(cmd),
            AdminOpcode::GET_FEATURES => self.get_features(cmd),
            // Only reached beyond the limit: the others are held in `stuck`.
            AdminOpcode::ASYNC_EVENT_REQUEST => (AER_LIMIT_EXCEEDED, 0),
            AdminOpcode::KEEP_ALIVE => {
                self.restart_keep_alive();
                (SUCCESS, 0)
            }
            _ => (INVALID_OPCODE, 0),
        }
    }

    fn io_queue_limit(&self, completion: bool) -> u16 {
        (if completion { self.ncqa } else { self.nsqa }).saturating_add(1)
    }

    // ----- queues -----

    /// Create I/O Completion Queue (section 5.3).
    fn create_cq(&mut self, cmd: &SubmissionEntry) -> u16 {
        let cdw10 = CreateIoQueueCdw10::from_bits(cmd.cdw10);
        let (qid, qsize) = (cdw10.qid(), cdw10.qsize());
        let cdw11 = CreateIoCqCdw11::from_bits(cmd.cdw11);
        let (pc, ien, vector) = (cdw11.pc(), cdw11.ien(), cdw11.iv());
        if qid == 0 || qid > self.io_queue_limit(true) || self.cqs.contains_key(&qid) {
            return INVALID_QID;
        }
        if qsize == 0 || qsize > self.cfg.mqes || qsize == u16::MAX {
            return INVALID_QSIZE;
        }
        if !cmd.prp1.is_multiple_of(PAGE) {
            return PRP_OFFSET_INVALID;
        }
        // One interrupt vector (0), and the queues are polled anyway.
        if ien && vector != 0 {
            return spec(cs::INVALID_INTERRUPT_VECTOR);
        }
        if !pc {
            return INVALID_FIELD;
        }
        let size = qsize + 1;
        if self.mem.device_range(cmd.prp1, size as usize * CQ_ENTRY as usize).is_none() {
            return INVALID_FIELD;
        }
        self.cqs.insert(qid, Cq::new(cmd.prp1, size));
        SUCCESS
    }

    /// Create I/O Submission Queue (section 5.4).
    fn create_sq(&mut self, cmd: &SubmissionEntry) -> u16 {
        let cdw10 = CreateIoQueueCdw10::from_bits(cmd.cdw10);
        let (qid, qsize) = (cdw10.qid(), cdw10.qsize());
        let cdw11 = CreateIoSqCdw11::from_bits(cmd.cdw11);
        let (pc, cqid) = (cdw11.pc(), cdw11.cqid());
        if cqid == 0 || !self.cqs.contains_key(&cqid) {
            return CQ_INVALID;
        }
        if qid == 0 || qid > self.io_queue_limit(false) || self.sqs.contains_key(&qid) {
            return INVALID_QID;
        }
        if qsize == 0 || qsize > self.cfg.mqes || qsize == u16::MAX {
            return INVALID_QSIZE;
        }
        if !cmd.prp1.is_multiple_of(PAGE) {
            return PRP_OFFSET_INVALID;
        }
        if !pc {
            return INVALID_FIELD;
        }
        let size = qsize + 1;
        if !self.sq_memory_ok(cmd.prp1, size as usize * SQ_ENTRY as usize) {
            return INVALID_FIELD;
        }
        self.sqs.insert(qid, Sq::new(cmd.prp1, size, cqid, cdw11.qprio()));
        SUCCESS
    }

    /// Delete I/O Submission Queue (section 5.6): every command of the queue
    /// still inside the device completes with "aborted due to SQ deletion"
    /// first.
    fn delete_sq(&mut self, cmd: &SubmissionEntry) -> u16 {
        let qid = DeleteIoQueueCdw10::from_bits(cmd.cdw10).qid();
        if qid == 0 || !self.sqs.contains_key(&qid) {
            return INVALID_QID;
        }
        let mut victims: Vec<Pending> = self.pending.values().filter(|p| p.sqid == qid).copied().collect();
        victims.extend(self.stuck.values().filter(|p| p.sqid == qid).copied());
        victims.sort_by_key(|p| p.seq);
        self.pending.retain(|_, p| p.sqid != qid);
        self.stuck.retain(|_, p| p.sqid != qid);
        for p in victims {
            self.post(qid, p.cmd.cdw0.cid(), ABORTED_SQ_DELETION, 0, PostKind::Real);
        }
        self.sqs.remove(&qid);
        // A new SQ with this identifier must not inherit what the host
        // releases of this one's completions.
        for cq in self.cqs.values_mut() {
            for slot in cq.slots.iter_mut().filter(|s| s.is_some_and(|(sq, _)| sq == qid)) {
                *slot = None;
            }
            for post in cq.waiting.iter_mut().filter(|p| p.track.is_some_and(|(sq, _)| sq == qid)) {
                post.track = None;
            }
        }
        SUCCESS
    }

    /// Delete I/O Completion Queue (section 5.5).
    fn delete_cq(&mut self, cmd: &SubmissionEntry) -> u16 {
        let qid = DeleteIoQueueCdw10::from_bits(cmd.cdw10).qid();
        if qid == 0 || !self.cqs.contains_key(&qid) {
            return INVALID_QID;
        }
        if self.sqs.values().any(|sq| sq.cqid == qid) {
            return INVALID_QUEUE_DELETION;
        }
        self.cqs.remove(&qid);
        SUCCESS
    }

    /// Abort (section 5.1): DW0 bit 0 is 0 when the command was aborted.
    fn abort(&mut self, cmd: &SubmissionEntry) -> u32 {
        let cdw10 = AbortCdw10::from_bits(cmd.cdw10);
        let (sqid, cid) = (cdw10.sqid(), cdw10.cid());
        if self.cfg.abort_lies {
            return 0;
        }
        if !self.cfg.abort_works {
            return 1;
        }
        let hit = |p: &Pending| p.sqid == sqid && p.cmd.cdw0.cid() == cid;
        let victim = if let Some(key) = self.pending.iter().find(|(_, p)| hit(p)).map(|(k, _)| *k) {
            self.pending.remove(&key)
        } else if let Some(key) = self.stuck.iter().find(|(_, p)| hit(p)).map(|(k, _)| *k) {
            self.stuck.remove(&key)
        } else {
            None
        };
        match victim {
            Some(p) => {
                self.post(p.sqid, cid, ABORTED_BY_REQUEST, 0, PostKind::Real);
                0
            }
            None => 1,
        }
    }

    // ----- features and log pages -----

    fn set_features(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        let cdw10 = FeaturesCdw10::from_bits(cmd.cdw10);
        if cdw10.sv() {
            return (NOT_SAVEABLE, 0);
        }
        let fid = cdw10.fid();
        match fid {
            Fid::NUMBER_OF_QUEUES => {
                let requested = NumberOfQueues::from_bits(cmd.cdw11);
                let (nsqr, ncqr) = (requested.nsq(), requested.ncq());
                if nsqr == u16::MAX || ncqr == u16::MAX {
                    return (INVALID_FIELD, 0);
                }
                if self.sqs.keys().chain(self.cqs.keys()).any(|&q| q != 0) {
                    return (COMMAND_SEQUENCE_ERROR, 0);
                }
                let max = self.cfg.max_io_queues - 1;
                self.nsqa = nsqr.min(max);
                self.ncqa = ncqr.min(max);
                (SUCCESS, self.queues_allocated())
            }
            // NPSS is 0: power state 0 only.
            Fid::POWER_MANAGEMENT if cmd.cdw11 & 0x1f != 0 => (INVALID_FIELD, 0),
            Fid::TEMPERATURE_THRESHOLD => {
                let t = TemperatureThreshold::from_bits(cmd.cdw11);
                if t.sensor() > 8 || t.under() > 1 {
                    return (INVALID_FIELD, 0);
                }
                self.features.insert(feature_key(fid, cmd.cdw11), u32::from(t.kelvin()));
                // As QEMU: setting a threshold the temperature has crossed
                // is a temperature warning (Critical Warning bit 1).
                let over = self.feature_value(Fid::TEMPERATURE_THRESHOLD, 0);
                let under = self.feature_value(Fid::TEMPERATURE_THRESHOLD, 1 << 20);
                if t.sensor() == 0 && (TEMPERATURE >= over as u16 || TEMPERATURE <= under as u16) {
                    self.smart_warning(1, AsyncEventInfo::SMART_TEMPERATURE_THRESHOLD);
                }
                (SUCCESS, 0)
            }
            Fid::KEEP_ALIVE_TIMER => {
                if self.cfg.kas == 0 {
                    return (INVALID_FIELD, 0);
                }
                self.features.insert(feature_key(fid, cmd.cdw11), cmd.cdw11);
                self.restart_keep_alive();
                (SUCCESS, 0)
            }
            Fid(0x01..=0x06 | 0x08..=0x0b) => {
                self.features.insert(feature_key(fid, cmd.cdw11), cmd.cdw11);
                (SUCCESS, 0)
            }
            Fid::HOST_MEMORY_BUFFER if self.cfg.hmpre != 0 => (self.set_hmb(cmd), 0),
            // The Host Identifier: 16 bytes with EXHID (CDW11 bit 0), else 8;
            // where reservations are (ONCS bit 5).
            Fid::HOST_IDENTIFIER if self.cfg.reservations => {
                let len = if cmd.cdw11 & 1 != 0 { 16 } else { 8 };
                match self.read_from_host(cmd, len) {
                    Ok(data) => {
                        self.host_id = [0; 16];
                        self.host_id[..len].copy_from_slice(&data);
                        self.host_id_extended = len == 16;
                        (SUCCESS, 0)
                    }
                    Err(status) => (status, 0),
                }
            }
            Fid::HOST_BEHAVIOR_SUPPORT => {
                // A 512-byte structure from the host; byte 0 is ACRE.
                match self.read_from_host(cmd, 512) {
                    Ok(data) if data[0] <= 1 => {
                        self.features.insert(u16::from(fid.0), u32::from(data[0]));
                        (SUCCESS, 0)
                    }
                    Ok(_) => (INVALID_FIELD, 0),
                    Err(status) => (status, 0),
                }
            }
            _ => (INVALID_FIELD, 0),
        }
    }

    /// Get Features (section 5.15) with SEL: current (set or default),
    /// default, saved (nothing is saveable, so the default) and supported
    /// capabilities (changeable, not saveable).
    fn get_features(&mut self, cmd: &SubmissionEntry) -> (u16, u32) {
        let cdw10 = FeaturesCdw10::from_bits(cmd.cdw10);
        let fid = cdw10.fid();
        if fid == Fid::HOST_IDENTIFIER && self.cfg.reservations && cdw10.sel() == 0 {
            let len = if cmd.cdw11 & 1 != 0 { 16 } else { 8 };
            let id = self.host_id;
            return (self.write_to_host(cmd, &id[..len]), 0);
        }
        if fid == Fid::HOST_MEMORY_BUFFER && self.cfg.hmpre != 0 && cdw10.sel() == 0 {
            return self.get_hmb(cmd);
        }
        if fid == Fid::LBA_RANGE_TYPE && cdw10.sel() == 0 {
            // One range: the whole namespace, general purpose, overwritable.
            let Some(ns) = self.namespaces.iter().find(|n| n.active && n.cfg.nsid == cmd.nsid) else {
                return (INVALID_NAMESPACE, 0);
            };
            let mut entry = [0u8; 64];
            entry[1] = 1;
            put(&mut entry, 24, &(ns.cfg.blocks - 1).to_le_bytes());
            return (self.write_to_host(cmd, &entry), 0);
        }
        let known = matches!(fid, Fid(0x01..=0x0b) | Fid::KEEP_ALIVE_TIMER);
        if !known || cdw10.sel() > 3 {
            return (INVALID_FIELD, 0);
        }
        let default = feature_default(fid, cmd.cdw11);
        let value = match cdw10.sel() {
            0 if fid == Fid::NUMBER_OF_QUEUES => self.queues_allocated(),
            0 => self.features.get(&feature_key(fid, cmd.cdw11)).copied().unwrap_or(default),
            1 | 2 => default,
            // Supported capabilities: changeable (bit 2).
            _ => 1 << 2,
        };
        (SUCCESS, value)
    }

    /// Starts the Keep Alive Timer over: KATO rounded up to the KAS
    /// granularity; stopped while KATO is 0.
    fn restart_keep_alive(&mut self) {
        let kato = self.features.get(&u16::from(Fid::KEEP_ALIVE_TIMER.0)).copied().unwrap_or(0);
        let unit = 100 * u64::from(self.cfg.kas.max(1));
        self.keep_alive_at = (kato != 0)
            .then(|| self.now.saturating_add(Duration::from_millis(u64::from(kato).div_ceil(unit) * unit)));
    }

    /// A feature's current value (its default until the host set it).
    fn feature_value(&self, fid: Fid, cdw11: u32) -> u32 {
        self.features.get(&feature_key(fid, cdw11)).copied().unwrap_or(feature_default(fid, cdw11))
    }

    /// Number of Queues DW0: NSQA and NCQA, 0-based.
    fn queues_allocated(&self) -> u32 {
        NumberOfQueues::new().with_nsq(self.nsqa).with_ncq(self.ncqa).into_bits()
    }

    /// Get Log Page (section 5.14): error information (ELPE + 1 empty
    /// entries), SMART / health (all zeros but a temperature of 313 K),
    /// firmware slots (slot 1 active, holding the firmware revision) and
    /// commands supported and effects, read from any dword offset (LPO,
    /// CDW12 and CDW13); bytes past a page's end read as zero, an offset past
    /// it is an invalid field.
    fn get_log_page(&mut self, cmd: &SubmissionEntry) -> u16 {
        let cdw10 = GetLogPageCdw10::from_bits(cmd.cdw10);
        let numd =
            ((GetLogPageCdw11::from_bits(cmd.cdw11).numdu() as usize) << 16) + cdw10.numdl() as usize + 1;
        let len = numd * 4;
        let offset = u64::from(cmd.cdw12) | (u64::from(cmd.cdw13) << 32);
        if len > MAX_LOG_BYTES || offset % 4 != 0 {
            return INVALID_FIELD;
        }
        let mut page = match cdw10.lid() {
            Lid::ERROR_INFORMATION => vec![0u8; (usize::from(ELPE) + 1) * 64],
            Lid::SMART_HEALTH => {
                let mut page = vec![0u8; 512];
                put(&mut page, 1, &TEMPERATURE.to_le_bytes());
                page
            }
            Lid::CHANGED_NAMESPACE_LIST => {
                let mut page = vec![0u8; PAGE_SIZE];
                if self.events.changed.len() > 1024 {
                    put(&mut page, 0, &u32::MAX.to_le_bytes());
                } else {
                    for (i, nsid) in self.events.changed.iter().enumerate() {
                        put(&mut page, 4 * i, &nsid.to_le_bytes());
                    }
                }
                page
            }
            Lid::FIRMWARE_SLOT => self.firmware.log(),
            Lid::COMMANDS_SUPPORTED_AND_EFFECTS => commands_effects(),
            Lid::DEVICE_SELF_TEST => {
                // Nothing in progress; results newest first, unused Fh.
                let mut page = vec![0u8; 564];
                for i in 0..20 {
                    page[4 + 28 * i] = self.self_tests.get(i).copied().unwrap_or(0x0f);
                }
                page
            }
            Lid::SANITIZE_STATUS if self.cfg.sanicap != 0 => self.sanitize_log(),
            _ => return INVALID_LOG_PAGE,
        };
        let Ok(offset) = usize::try_from(offset) else { return INVALID_FIELD };
        if offset > page.len() {
            return INVALID_FIELD;
        }
        page.drain(..offset);
        page.resize(len, 0);
        let status = self.write_to_host(cmd, &page);
        if status == SUCCESS {
            self.log_page_read(cdw10.lid(), cdw10.rae());
        }
        status
    }

    // ----- identify -----

    fn identify(&mut self, cmd: &SubmissionEntry) -> u16 {
        let cns = IdentifyCdw10::from_bits(cmd.cdw10).cns();
        let nsid = cmd.nsid;
        let mut page = vec![0u8; PAGE_SIZE];
        match cns {
            Cns::NAMESPACE | Cns::ALLOCATED_NAMESPACE => {
                if nsid == 0 || nsid > self.nn {
                    return INVALID_NAMESPACE;
                }
                self.identify_namespace(nsid, cns == Cns::ALLOCATED_NAMESPACE, &mut page);
            }
            Cns::ALLOCATED_NAMESPACES => {
                if nsid >= 0xffff_fffe {
                    return INVALID_NAMESPACE;
                }
                self.allocated_list(nsid, &mut page);
            }
            Cns::ATTACHED_CONTROLLERS | Cns::SUBSYSTEM_CONTROLLERS => {
                let attached_to = (cns == Cns::ATTACHED_CONTROLLERS).then_some(nsid);
                let status = self.controller_list(attached_to, (cmd.cdw10 >> 16) as u16, &mut page);
                if status != SUCCESS {
                    return status;
                }
            }
            Cns::CONTROLLER => self.identify_controller(&mut page),
            Cns::ACTIVE_NAMESPACES => {
                if nsid >= 0xffff_fffe {
                    return INVALID_NAMESPACE;
                }
                let active = self.namespaces.iter().filter(|n| n.active && n.cfg.nsid > nsid);
                for (i, ns) in active.take(1024).enumerate() {
                    put(&mut page, i * 4, &ns.cfg.nsid.to_le_bytes());
                }
            }
            // The NVM command set's Identify Namespace (CSI 00h in CDW11
            // bits 31:24): ELBAF with each format's PIF.
            Cns::IO_COMMAND_SET_NAMESPACE => {
                let Some(ns) = self.namespaces.iter().find(|n| n.active && n.cfg.nsid == nsid) else {
                    return INVALID_NAMESPACE;
                };
                match (cmd.cdw11 >> 24, ns.zones.as_ref()) {
                    (0, _) => {
                        for i in 0..ns.formats.len() {
                            put(&mut page, 12 + 4 * i, &(u32::from(ns.md.pif) << 7).to_le_bytes());
                        }
                    }
                    // The zoned structure: no limits (MAR, MOR all ones),
                    // each format's zone size and extension size at 2816.
                    (2, Some(zones)) => {
                        put(&mut page, 4, &u32::MAX.to_le_bytes());
                        put(&mut page, 8, &u32::MAX.to_le_bytes());
                        for i in 0..ns.formats.len() {
                            put(&mut page, 2816 + 16 * i, &zones.zone_blocks.to_le_bytes());
                            put(&mut page, 2816 + 16 * i + 8, &[(zones.extension / 64) as u8]);
                        }
                    }
                    _ => return INVALID_FIELD,
                }
            }
            // The zoned command set's Identify Controller: ZASL 0 (MDTS).
            Cns::IO_COMMAND_SET_CONTROLLER if cmd.cdw11 >> 24 == 2 && !self.cfg.zoned.is_empty() => {}
            Cns::NAMESPACE_ID_DESCRIPTORS => {
                if !self.namespaces.iter().any(|n| n.active && n.cfg.nsid == nsid) {
                    return INVALID_NAMESPACE;
                }
                // An NGUID descriptor (NIDT 2, 16 bytes), then the CSI (NIDT 4, 1 byte: NVM).
                page[0] = Nidt::NGUID.0;
                page[1] = 16;
                put(&mut page, 4, b"nvme-sim");
                put(&mut page, 12, &nsid.to_be_bytes());
                page[20] = Nidt::CSI.0;
                page[21] = 1;
                let zoned = self.namespaces.iter().any(|n| n.cfg.nsid == nsid && n.zones.is_some());
                page[24] = if zoned { 2 } else { 0 };
            }
            _ => return INVALID_FIELD,
        }
        self.write_to_host(cmd, &page)
    }

    /// Identify Controller (CNS 01h), written at the offsets of NVMe 1.4
    /// figure 247 (independently of the driver's structure definition).
    fn identify_controller(&self, b: &mut [u8]) {
        let lies = self.cfg.lies;
        put(b, 0, &0x1b36u16.to_le_bytes()); // VID
        put(b, 2, &0x1af4u16.to_le_bytes()); // SSVID
        put_str(b, 4, 20, "SIM0001");
        put_str(b, 24, 40, "nvme-sim");
        put(b, 64, &self.firmware.revision());
        b[72] = 6; // RAB
                   // OAES: namespace attribute notices.
        put(b, 92, &lies.oaes.unwrap_or(0x100).to_le_bytes());
        b[77] = lies.mdts.unwrap_or(self.cfg.mdts);
        put(b, 78, &1u16.to_le_bytes()); // CNTLID
        put(b, 80, &VERSION.to_le_bytes());
        b[111] = 1; // CNTRLTYPE: I/O controller
        for (i, crdt) in self.cfg.crdt.iter().enumerate() {
            put(b, 128 + 2 * i, &crdt.to_le_bytes()); // CRDT1..3
        }
        b[258] = 3; // ACL: 4 concurrent aborts
                    // OACS: Format NVM, Firmware, Namespace Management, Device
                    // Self-test.
        let security = u16::from(self.cfg.security); // OACS bit 0
        let dbbuf = if self.cfg.doorbell_buffer == DoorbellBuffer::Off { 0 } else { 0x0100 }; // OACS bit 8
        put(b, 256, &lies.oacs.unwrap_or(0x001e | security | dbbuf).to_le_bytes());
        b[524] = lies.fna.unwrap_or(0); // FNA
        put(b, 328, &self.cfg.sanicap.to_le_bytes()); // SANICAP
        b[259] = (AER_LIMIT - 1) as u8; // AERL
        put(b, 320, &self.cfg.kas.to_le_bytes()); // KAS
        put(b, 272, &self.cfg.hmpre.to_le_bytes()); // HMPRE
        put(b, 276, &self.cfg.hmmin.to_le_bytes()); // HMMIN
        put(b, 332, &self.cfg.hmminds.to_le_bytes()); // HMMINDS
        put(b, 336, &self.cfg.hmmaxd.to_le_bytes()); // HMMAXD
        b[260] = FRMW;
        b[319] = self.cfg.fwug; // FWUG
        b[261] = 0x06; // LPA: commands supported and effects, extended data
        b[262] = ELPE;
        b[263] = 0; // NPSS: one power state
        put(b, 266, &343u16.to_le_bytes()); // WCTEMP
        put(b, 268, &373u16.to_le_bytes()); // CCTEMP
        b[512] = 0x66; // SQES
        b[513] = 0x44; // CQES
        put(b, 516, &lies.nn.unwrap_or(self.nn).to_le_bytes());
        // ONCS: Compare, Write Uncorrectable, DSM, Write Zeroes,
        // save/select, Verify, and reservations and Copy where configured
        // (with OCFS: format 0h).
        let reservations = if self.cfg.reservations { 1 << 5 } else { 0 };
        let copy = if self.cfg.copy { 1 << 8 } else { 0 };
        put(b, 520, &lies.oncs.unwrap_or(0x009f | reservations | copy).to_le_bytes());
        put(b, 534, &u16::from(self.cfg.copy).to_le_bytes()); // OCFS
        put(b, 536, &self.cfg.sgls.to_le_bytes()); // SGLS
        b[525] = 0x01; // VWC present
        put(b, 768, b"nqn.2024-01.io.github.nvme-sim:SIM0001");
        put(b, 2048, &2500u16.to_le_bytes()); // PSD0 MP: 25 W
    }

    /// Format NVM (section 5.23): LBAF 0 or 1 (CDW10 bits 3:0), no
    /// metadata, no protection information; the namespace's data is zeroed
    /// and its size recounted in the new blocks (NSID FFFFFFFFh: every
    /// namespace).
    fn format_nvm(&mut self, cmd: &SubmissionEntry) -> u16 {
        let lbaf = (cmd.cdw10 & 0xf) as usize;
        let rest = cmd.cdw10 >> 4;
        if lbaf > 1 || rest != 0 {
            return INVALID_FORMAT;
        }
        if self.apply_format(cmd.nsid, lbaf) {
            SUCCESS
        } else {
            INVALID_NAMESPACE
        }
    }

    /// Formats active namespace `nsid` (every one for FFFFFFFFh) with LBA
    /// format `lbaf` (0 or 1): zeroed, new block size. False if none is.
    pub(crate) fn apply_format(&mut self, nsid: u32, lbaf: usize) -> bool {
        let all = nsid == u32::MAX;
        let mut found = false;
        for ns in self.namespaces.iter_mut().filter(|n| n.active && (all || n.cfg.nsid == nsid)) {
            let Some(&block) = ns.formats.get(lbaf) else { return false };
            found = true;
            ns.data.iter_mut().for_each(|b| *b = 0);
            ns.uncorrectable.clear();
            ns.cfg.block_size = block;
            ns.cfg.blocks = ns.data.len() as u64 / u64::from(block);
            ns.meta = vec![0; ns.cfg.blocks as usize * usize::from(ns.md.ms)];
        }
        found
    }

    /// Device Self-test (section 5.8): a short (1) or extended (2) test
    /// completes at once, without error, and is logged; abort (Fh) finds
    /// nothing to abort.
    fn device_self_test(&mut self, cmd: &SubmissionEntry) -> u16 {
        let code = (cmd.cdw10 & 0xf) as u8;
        match code {
            1 | 2 => {
                self.self_tests.insert(0, code << 4);
                self.self_tests.truncate(20);
                SUCCESS
            }
            0xf => SUCCESS,
            _ => INVALID_FIELD,
        }
    }

    /// Identify Namespace (CNS 00h): zeros for an inactive NSID.
    fn identify_namespace(&self, nsid: u32, allocated: bool, b: &mut [u8]) {
        let Some(ns) = self.namespaces.iter().find(|n| (n.active || allocated) && n.cfg.nsid == nsid) else {
            return;
        };
        let lies = self.cfg.lies;
        let blocks = ns.cfg.blocks;
        put(b, 0, &blocks.to_le_bytes()); // NSZE
        put(b, 8, &blocks.to_le_bytes()); // NCAP
        put(b, 16, &blocks.to_le_bytes()); // NUSE
        let current = u8::from(ns.cfg.block_size != ns.formats[0]);
        b[25] = lies.nlbaf.unwrap_or(1);
        let md = ns.md;
        b[26] = lies.flbas.unwrap_or(current | u8::from(md.extended) << 4);
        if md.ms != 0 {
            b[27] = 0x03; // MC: extended and separate metadata
        }
        if md.pi != 0 {
            b[28] = 0x1f; // DPC: types 1 to 3, first or last bytes
            b[29] = md.pi | u8::from(md.pi_first) << 3; // DPS
        }
        put(b, 46, &self.cfg.noiob.to_le_bytes()); // NOIOB
        put(b, 104, b"nvme-sim");
        put(b, 112, &nsid.to_be_bytes());
        // LBAF0 and LBAF1: the namespace's metadata size, LBADS = log2(block
        // size), best performance. (A lie about LBADS replaces the current
        // format's.)
        for (i, block) in ns.formats.iter().enumerate() {
            put(b, 128 + 4 * i, &md.ms.to_le_bytes());
            b[128 + 4 * i + 2] = block.trailing_zeros() as u8;
        }
        if let Some(lbads) = lies.lbads {
            b[128 + 4 * usize::from(current) + 2] = lbads;
        }
        if self.cfg.reservations {
            b[31] = lies.rescap.unwrap_or(0xff); // RESCAP: every type, PTPL, IEKEY
        }
        if self.cfg.copy {
            let limits = self.cfg.copy_limits;
            put(b, 74, &limits.mssrl.to_le_bytes()); // MSSRL
            put(b, 76, &limits.mcl.to_le_bytes()); // MCL
            b[80] = limits.msrc; // MSRC
        }
    }
}
