import { create, toBinary, fromBinary } from "@bufbuild/protobuf";
import { CreateUserRequestSchema, UserService } from "@mcsv/sdk";

test("sdk resolves", () => {
  const m = create(CreateUserRequestSchema, { name: "a", email: "b@c.d" });
  expect(fromBinary(CreateUserRequestSchema, toBinary(CreateUserRequestSchema, m)).email).toBe("b@c.d");
  expect(UserService.typeName).toBe("mcsv.v1.UserService");
});
