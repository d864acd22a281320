// What CUDA devices this process can see. Safe to call on machines without a GPU or driver:
// it then reports zero devices and the reason.
#pragma once

#include <string>
#include <vector>

namespace kvs::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  size_t total_bytes = 0, free_bytes = 0;
};

// Visible devices; on failure an empty list and `why` set (e.g. "no CUDA driver").
std::vector<DeviceInfo> ListDevices(std::string* why);

}  // namespace kvs::cuda
