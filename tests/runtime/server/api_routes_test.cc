// The HTTP decisions taken before any engine work: routes (404 / 405 with Allow), JSON-only
// generation bodies (415 for what a cross-site form may post), and Status -> HTTP code.
#include "runtime/server/api_routes.h"

#include "gtest/gtest.h"

namespace kvs {
namespace {

TEST(ApiRoutesTest, KnownPathsTakeOneMethodAndOthersAre404) {
  EXPECT_EQ(DecideRoute("GET", "/health").status, 200);
  EXPECT_EQ(DecideRoute("POST", "/v1/chat/completions").status, 200);
  const RouteDecision wrong = DecideRoute("GET", "/v1/completions");
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.allow, "POST");
  EXPECT_EQ(DecideRoute("DELETE", "/metrics").allow, "GET");
  EXPECT_EQ(DecideRoute("GET", "/v1/completion").status, 404);
  EXPECT_EQ(DecideRoute("GET", "/").status, 404);
}

TEST(ApiRoutesTest, OnlyJsonBodiesAreTaken) {
  for (const char* ok : {"", "application/json", "Application/JSON; charset=utf-8", "application/vnd.api+json"}) {
    EXPECT_TRUE(CheckJsonContentType(ok).ok()) << ok;
  }
  for (const char* bad : {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                          "text/plain;charset=UTF-8"}) {
    const absl::Status s = CheckJsonContentType(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find("is not JSON"), std::string::npos);
  }
}

TEST(ApiRoutesTest, StatusCodesMapToHttp) {
  EXPECT_EQ(HttpCodeOf(absl::InvalidArgumentError("x")), 400);
  EXPECT_EQ(HttpCodeOf(absl::ResourceExhaustedError("x")), 503);
  EXPECT_EQ(HttpCodeOf(absl::UnavailableError("x")), 503);
  EXPECT_EQ(HttpCodeOf(absl::InternalError("x")), 500);
  EXPECT_EQ(ErrorType(absl::UnavailableError("x")), "server_overloaded");
}

}  // namespace
}  // namespace kvs
