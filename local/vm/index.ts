// The local VM runner: build a cached Debian image, boot it with a user-data, talk to it over
// ssh with a pinned host key. See docs/VM.md.
export { buildImage, defaultCacheDir, imageKey, DEFAULT_REPO_PACKAGES, RELEASES } from "./image";
export type { BuildImageOptions, ImageInfo, Release } from "./image";
export { chooseAccel } from "./qemu";
export type { Accel } from "./qemu";
export { isHostKeyFailure, knownHostsLine } from "./ssh";
export type { ExecResult, SshLogin } from "./ssh";
export { attachVm, bootVm, GuestPanicError, kernelPanic, logProblems, parseCloudInitStatus, resumeVm, stopVm, TIME_SOURCE, Vm, VmError, VmSession } from "./vm";
export type { BootOptions, CloudInitStatus, ExecOptions, ResumeOptions, VmShape, VmState } from "./vm";
export { firstBoot, firstBootCacheDir, firstBootKey, resumeReady } from "./firstBoot";
export type { FirstBoot, FirstBootOptions } from "./firstBoot";
