#include <gtest/gtest.h>

#include <string>

#include "util/version.h"

TEST(Version, IsSemantic) {
  std::string v = elastic::version();
  EXPECT_EQ(std::count(v.begin(), v.end(), '.'), 2) << v;
}
