/**
 * protoc-gen-openapi writes one OpenAPI 3.1 document per service (openapi/<name>.yaml, see openapi.ts) for the
 * Connect protocol's HTTP/JSON mapping. buf runs it with `strategy: all`, so one request holds every file.
 */
import { create, createFileRegistry } from "@bufbuild/protobuf";
import {
  CodeGeneratorResponse_Feature,
  CodeGeneratorResponseSchema,
  FileDescriptorSetSchema,
  type CodeGeneratorRequest,
} from "@bufbuild/protobuf/wkt";
import { runNodeJs, type Plugin } from "@bufbuild/protoplugin";
import { openApiFileName, renderOpenApi } from "./openapi.js";

export const protocGenOpenApi: Plugin = {
  name: "protoc-gen-openapi",
  version: "v1",
  run(request: CodeGeneratorRequest) {
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: request.protoFile }));
    const outputs = new Map<string, string>();
    for (const fileName of request.fileToGenerate) {
      const file = registry.getFile(fileName);
      if (!file) throw new Error(`protoc-gen-openapi: ${fileName} is missing from the request`);
      for (const service of file.services) {
        const name = openApiFileName(service);
        if (outputs.has(name)) throw new Error(`protoc-gen-openapi: two services map to ${name}`);
        outputs.set(name, renderOpenApi(service));
      }
    }
    return create(CodeGeneratorResponseSchema, {
      supportedFeatures: BigInt(CodeGeneratorResponse_Feature.PROTO3_OPTIONAL),
      file: [...outputs].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, content]) => ({ name, content })),
    });
  },
};

runNodeJs(protocGenOpenApi);
