/**
 * gRPC server reflection (grpc.reflection.v1 and the older v1alpha), so that `buf curl`, grpcurl, grpcui and Postman
 * can call a service without a local copy of its protos. Each request on the stream gets exactly one response, in
 * order; a question it cannot answer gets an error_response (a gRPC status code) and the stream goes on.
 */
import { create, fromBinary, toBinary, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import { descriptorIndex, type DescriptorIndex } from "./descriptors.js";
import {
  ServerReflection,
  ServerReflectionRequestSchema,
  ServerReflectionResponseSchema,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from "./gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "./gen/grpc/reflection/v1alpha/reflection_pb.js";

/** The reflection services themselves, which every listing includes. */
export const reflectionServices: DescService[] = [ServerReflection, v1alpha.ServerReflection];

/**
 * Mounts both versions of ServerReflection. `services` are the other services the server runs (its own, and
 * grpc.health.v1.Health); list_services names them and the two reflection services, and every file they need can
 * be asked for.
 */
export function reflectionRoutes(services: DescService[]): (router: ConnectRouter) => void {
  const index = descriptorIndex([...services, ...reflectionServices]);
  return (router) => {
    router.service(ServerReflection, {
      async *serverReflectionInfo(requests) {
        for await (const request of requests) yield answer(index, request);
      },
    });
    // v1alpha has the same messages, field for field: its requests are answered as v1 ones.
    router.service(v1alpha.ServerReflection, {
      async *serverReflectionInfo(requests) {
        for await (const request of requests) {
          const asV1 = fromBinary(ServerReflectionRequestSchema, toBinary(v1alpha.ServerReflectionRequestSchema, request));
          yield fromBinary(v1alpha.ServerReflectionResponseSchema, toBinary(ServerReflectionResponseSchema, answer(index, asV1)));
        }
      },
    });
  };
}

/** The response to one reflection request. */
export function answer(index: DescriptorIndex, request: ServerReflectionRequest): ServerReflectionResponse {
  const respond = (messageResponse: MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"]) =>
    create(ServerReflectionResponseSchema, { validHost: request.host, originalRequest: request, messageResponse });
  const error = (code: Code, message: string) => respond({ case: "errorResponse", value: { errorCode: code, errorMessage: message } });
  const files = (file: ReturnType<DescriptorIndex["fileByName"]>, notFound: string) =>
    file ? respond({ case: "fileDescriptorResponse", value: { fileDescriptorProto: index.encodedWithDependencies(file) } }) : error(Code.NotFound, notFound);

  const { messageRequest: question } = request;
  switch (question.case) {
    case "listServices":
      return respond({ case: "listServicesResponse", value: { service: index.serviceNames.map((name) => ({ name })) } });
    case "fileByFilename":
      return files(index.fileByName(question.value), `file not found: ${question.value}`);
    case "fileContainingSymbol":
      return files(index.fileContainingSymbol(question.value), `symbol not found: ${question.value}`);
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = question.value;
      return files(index.fileContainingExtension(containingType, extensionNumber), `extension not found: ${containingType} ${extensionNumber}`);
    }
    case "allExtensionNumbersOfType": {
      const numbers = index.extensionNumbersOf(question.value);
      if (!numbers) return error(Code.NotFound, `message type not found: ${question.value}`);
      return respond({ case: "allExtensionNumbersResponse", value: { baseTypeName: question.value, extensionNumber: numbers } });
    }
    default:
      return error(Code.InvalidArgument, "the request asks nothing (message_request is not set)");
  }
}
