//! The completion status values the controller posts: Status Code Type and
//! Status Code with the Do Not Retry bit (NVMe 1.4 section 4.6.1.2), the
//! phase tag left clear for the poster to set. DNR is set where a retry
//! cannot succeed.

use nvme_spec::status::{command_specific as cs, generic, media, Status, StatusCode, StatusCodeType};

pub(super) const DNR: u16 = 1 << 15;

const fn st(sct: StatusCodeType, sc: StatusCode, dnr: bool) -> u16 {
    Status::of(sct, sc).raw() | if dnr { DNR } else { 0 }
}
const fn gen(sc: StatusCode, dnr: bool) -> u16 {
    st(StatusCodeType::GENERIC, sc, dnr)
}
pub(super) const fn spec(sc: StatusCode) -> u16 {
    st(StatusCodeType::COMMAND_SPECIFIC, sc, true)
}

pub(super) const SUCCESS: u16 = 0;
pub(super) const INVALID_OPCODE: u16 = gen(generic::INVALID_OPCODE, true);
pub(super) const INVALID_FIELD: u16 = gen(generic::INVALID_FIELD, true);
pub(super) const DATA_TRANSFER_ERROR: u16 = gen(generic::DATA_TRANSFER_ERROR, false);
pub(super) const ABORTED_BY_REQUEST: u16 = gen(generic::ABORTED_BY_REQUEST, false);
pub(super) const ABORTED_SQ_DELETION: u16 = gen(generic::ABORTED_SQ_DELETION, false);
pub(super) const INVALID_NAMESPACE: u16 = gen(generic::INVALID_NAMESPACE_OR_FORMAT, true);
pub(super) const COMMAND_SEQUENCE_ERROR: u16 = gen(generic::COMMAND_SEQUENCE_ERROR, true);
pub(super) const INVALID_SGL_SEGMENT: u16 = gen(generic::INVALID_SGL_SEGMENT_DESCRIPTOR, true);
pub(super) const DATA_SGL_LENGTH_INVALID: u16 = gen(generic::DATA_SGL_LENGTH_INVALID, true);
pub(super) const METADATA_SGL_LENGTH_INVALID: u16 = gen(generic::METADATA_SGL_LENGTH_INVALID, true);
pub(super) const SGL_TYPE_INVALID: u16 = gen(generic::SGL_DESCRIPTOR_TYPE_INVALID, true);
pub(super) const SGL_GRANULARITY_INVALID: u16 = gen(generic::SGL_DATA_BLOCK_GRANULARITY_INVALID, true);
pub(super) const PRP_OFFSET_INVALID: u16 = gen(generic::PRP_OFFSET_INVALID, true);
pub(super) const LBA_OUT_OF_RANGE: u16 = gen(generic::LBA_OUT_OF_RANGE, true);
pub(super) const RESERVATION_CONFLICT: u16 = gen(generic::RESERVATION_CONFLICT, true);
pub(super) const HOST_ID_INCONSISTENT: u16 = gen(generic::HOST_ID_INCONSISTENT_FORMAT, true);
pub(super) const COMPARE_FAILURE: u16 =
    st(StatusCodeType::MEDIA_DATA_INTEGRITY, media::COMPARE_FAILURE, true);
pub(super) const UNRECOVERED_READ_ERROR: u16 =
    st(StatusCodeType::MEDIA_DATA_INTEGRITY, media::UNRECOVERED_READ_ERROR, true);
pub(super) const COMMAND_SIZE_LIMIT_EXCEEDED: u16 = spec(cs::COMMAND_SIZE_LIMIT_EXCEEDED);
pub(super) const GUARD_CHECK: u16 =
    st(StatusCodeType::MEDIA_DATA_INTEGRITY, media::END_TO_END_GUARD_CHECK_ERROR, true);
pub(super) const APP_TAG_CHECK: u16 =
    st(StatusCodeType::MEDIA_DATA_INTEGRITY, media::END_TO_END_APPLICATION_TAG_CHECK_ERROR, true);
pub(super) const REF_TAG_CHECK: u16 =
    st(StatusCodeType::MEDIA_DATA_INTEGRITY, media::END_TO_END_REFERENCE_TAG_CHECK_ERROR, true);
pub(super) const INVALID_PROTECTION_INFORMATION: u16 = spec(cs::INVALID_PROTECTION_INFORMATION);
pub(super) const CQ_INVALID: u16 = spec(cs::COMPLETION_QUEUE_INVALID);
pub(super) const INVALID_QID: u16 = spec(cs::INVALID_QUEUE_IDENTIFIER);
pub(super) const INVALID_QSIZE: u16 = spec(cs::INVALID_QUEUE_SIZE);
pub(super) const INVALID_QUEUE_DELETION: u16 = spec(cs::INVALID_QUEUE_DELETION);
pub(super) const AER_LIMIT_EXCEEDED: u16 = spec(cs::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED);
pub(super) const INVALID_LOG_PAGE: u16 = spec(cs::INVALID_LOG_PAGE);
pub(super) const INVALID_FORMAT: u16 = spec(cs::INVALID_FORMAT);
pub(super) const NOT_SAVEABLE: u16 = spec(cs::FEATURE_ID_NOT_SAVEABLE);
pub(super) const INSUFFICIENT_CAPACITY: u16 = spec(cs::NAMESPACE_INSUFFICIENT_CAPACITY);
pub(super) const NSID_UNAVAILABLE: u16 = spec(cs::NAMESPACE_ID_UNAVAILABLE);
pub(super) const ALREADY_ATTACHED: u16 = spec(cs::NAMESPACE_ALREADY_ATTACHED);
pub(super) const NOT_ATTACHED: u16 = spec(cs::NAMESPACE_NOT_ATTACHED);
pub(super) const THIN_PROVISIONING: u16 = spec(cs::THIN_PROVISIONING_NOT_SUPPORTED);
pub(super) const INVALID_FIRMWARE_SLOT: u16 = spec(cs::INVALID_FIRMWARE_SLOT);
pub(super) const INVALID_FIRMWARE_IMAGE: u16 = spec(cs::INVALID_FIRMWARE_IMAGE);
pub(super) const OVERLAPPING_RANGE: u16 = spec(cs::OVERLAPPING_RANGE);
pub(super) const CONTROLLER_LIST_INVALID: u16 = spec(cs::CONTROLLER_LIST_INVALID);
